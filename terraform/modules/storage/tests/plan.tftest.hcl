# modules/storage planned with a mocked AWS provider (see scripts/check-terraform.sh).

mock_provider "aws" {
  source = "../../tests/mocks"
}

variables {
  bucket_name = "test-dcc-jobs"
  kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "defaults" {
  command = plan
  assert {
    condition     = aws_s3_bucket.this.force_destroy == false && aws_s3_bucket_public_access_block.this.block_public_policy
    error_message = "Private bucket, kept on destroy."
  }
  assert {
    condition     = aws_s3_bucket_lifecycle_configuration.this.rule[0].expiration[0].days == 8
    error_message = "Job files expire a day after DCC's retention."
  }
}
