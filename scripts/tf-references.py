#!/usr/bin/env python3
"""Offline reference check of the Terraform modules: the part of `terraform validate` that needs
no provider schema. scripts/check-terraform.sh runs the real `terraform validate` where a local
provider mirror exists (our machines have one); this check runs everywhere, also without the
provider, and catches what otherwise would only show at `terraform apply`:

- every `var.X`, `local.X`, `data.T.N`, resource `T.N` and `module.M` referenced is declared;
- every `module.M.O` names an output of M's source module;
- a module block passes only variables its source declares, and every variable without a
  default.

Usage: tf-references.py TERRAFORM_DIR (run with a Python that has `hcl2`, e.g. checkov's venv).
Exits 1 listing each problem as `file:line: message`.
"""

import glob
import os
import re
import sys

import hcl2

# Arguments of a module block that are Terraform's, not the module's variables.
META_ARGS = {"source", "version", "providers", "count", "for_each", "depends_on"}
# Provider prefixes of resource types: a `T.N` inside an expression with one of these is a
# resource reference (other `a.b` are loop variables, `each.value`, `path.module`, ...).
RESOURCE_PREFIXES = ("aws_", "archive_", "random_", "null_", "tls_", "local_", "cloudinit_", "terraform_data")
# Terraform's own objects, never declared.
BUILTIN_ROOTS = {"each", "count", "path", "self", "terraform"}

REF = re.compile(r"(?<![\w.])([a-z][a-z0-9_]*)\.([A-Za-z0-9_-]+)(?:\.([A-Za-z0-9_-]+))?")
INTERP = re.compile(r"\$\{(.*)\}", re.S)


class Module:
    """What one folder of .tf files declares and references."""

    def __init__(self, path):
        self.path = path
        self.variables = {}  # name -> has a default
        self.locals = set()
        self.resources = set()  # "type.name"
        self.data = set()  # "type.name"
        self.modules = {}  # name -> (source, args, file, line)
        self.outputs = set()
        self.refs = []  # (file, line, expression)
        for f in sorted(glob.glob(os.path.join(path, "*.tf"))):
            with open(f) as fh:
                doc = hcl2.load(fh)
            self._read(f, doc)

    def _read(self, f, doc):
        for block in doc.get("variable", []):
            for name, body in block.items():
                self.variables[name] = "default" in body
        for block in doc.get("locals", []):
            self.locals.update(k for k in block if not k.startswith("__"))
            self._collect(f, block, block.get("__start_line__", 0))
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    self.resources.add(f"{rtype}.{name}")
                    self._collect(f, body, body.get("__start_line__", 0))
        for block in doc.get("data", []):
            for dtype, named in block.items():
                for name, body in named.items():
                    self.data.add(f"{dtype}.{name}")
                    self._collect(f, body, body.get("__start_line__", 0))
        for block in doc.get("module", []):
            for name, body in block.items():
                source = body["source"][0] if isinstance(body["source"], list) else body["source"]
                args = {k for k in body if k not in META_ARGS and not k.startswith("__")}
                self.modules[name] = (source, args, f, body.get("__start_line__", 0))
                self._collect(f, body, body.get("__start_line__", 0))
        for block in doc.get("output", []):
            for name, body in block.items():
                self.outputs.add(name)
                self._collect(f, body, body.get("__start_line__", 0))

    def _collect(self, f, node, line):
        if isinstance(node, dict):
            line = node.get("__start_line__", line)
            for k, v in node.items():
                if not k.startswith("__"):
                    self._collect(f, v, line)
        elif isinstance(node, list):
            for v in node:
                self._collect(f, v, line)
        elif isinstance(node, str):
            for m in INTERP.finditer(node):
                self.refs.append((f, line, m.group(1)))


def check(path, cache):
    mod = cache.setdefault(path, Module(path))
    problems = []
    for f, line, expr in mod.refs:
        # Quoted strings inside expressions are text, not references.
        expr = re.sub(r'"[^"]*"', '""', expr)
        for root, name, attr in REF.findall(expr):
            where = f"{f}:{line}"
            if root == "var" and name not in mod.variables:
                problems.append(f"{where}: var.{name} is not declared")
            elif root == "local" and name not in mod.locals:
                problems.append(f"{where}: local.{name} is not declared")
            elif root == "data" and attr and f"{name}.{attr}" not in mod.data:
                problems.append(f"{where}: data.{name}.{attr} is not declared")
            elif root == "module":
                if name not in mod.modules:
                    problems.append(f"{where}: module.{name} is not declared")
                elif attr:
                    child = os.path.normpath(os.path.join(path, mod.modules[name][0]))
                    outputs = cache.setdefault(child, Module(child)).outputs
                    if attr not in outputs:
                        problems.append(f"{where}: module.{name}.{attr}: {child} has no output {attr!r}")
            elif root.startswith(RESOURCE_PREFIXES) and root not in BUILTIN_ROOTS:
                if f"{root}.{name}" not in mod.resources:
                    problems.append(f"{where}: resource {root}.{name} is not declared")
    for name, (source, args, f, line) in mod.modules.items():
        child_path = os.path.normpath(os.path.join(path, source))
        if not os.path.isdir(child_path):
            problems.append(f"{f}:{line}: module {name}: source {source} is not a folder")
            continue
        child = cache.setdefault(child_path, Module(child_path))
        for a in sorted(args - set(child.variables)):
            problems.append(f"{f}:{line}: module {name} passes {a!r}, which {source} does not declare")
        for v, has_default in sorted(child.variables.items()):
            if not has_default and v not in args:
                problems.append(f"{f}:{line}: module {name} does not pass the required variable {v!r}")
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "terraform"
    dirs = sorted(glob.glob(os.path.join(root, "modules", "*"))) + sorted(
        glob.glob(os.path.join(root, "examples", "*"))
    )
    cache, problems = {}, []
    for d in dirs:
        problems += check(os.path.normpath(d), cache)
    for p in problems:
        print(p)
    checked = sum(len(m.refs) for m in cache.values())
    print(f"{len(dirs)} folders, {checked} expressions checked, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
