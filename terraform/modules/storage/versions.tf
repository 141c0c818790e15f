terraform {
  required_version = ">= 1.9"
  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Validated and planned (terraform validate, terraform test with a mocked provider) with 5.100.
      version = "~> 5.100"
    }
  }
}
