#!/usr/bin/env python3
"""Structural checks of every Terraform module and example, without a provider download.

Terraform cannot `init` a module that needs a provider here (no registry in reach), so the
provider modules are checked from their parsed HCL (python-hcl2) instead:
- every .tf file parses;
- every directory declares `terraform { required_version }`;
- every required provider has a `source` and a pinned `version` constraint;
- every variable and output has a non-empty description;
- modules (not examples) configure no provider: the caller does;
- no credential is written down (access keys, secret keys, passwords, credential files);
- every `module` source is a local path that exists;
- the thin provider modules call the core module.
Usage: check_modules.py TERRAFORM_DIR. Prints one line per problem; exits 1 if there is any.
"""
import os
import re
import sys

import hcl2

CREDENTIAL_KEYS = {
    "access_key",
    "secret_key",
    "token",
    "password",
    "credentials",
    "private_key",
    "client_secret",
}
# Something that looks like an AWS key id or a PEM private key in any string.
CREDENTIAL_VALUES = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----")


def unquote(s):
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


def walk_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_strings(v)


def blocks(doc, kind):
    """(name, body) pairs of the labelled blocks `kind "name" { ... }`."""
    for entry in doc.get(kind, []):
        for name, body in entry.items():
            yield unquote(name), body


def check_dir(path, is_module, problems):
    files = sorted(f for f in os.listdir(path) if f.endswith(".tf"))
    docs = {}
    for f in files:
        full = os.path.join(path, f)
        try:
            with open(full) as fh:
                docs[f] = hcl2.load(fh)
        except Exception as e:  # hcl2 raises lark errors of several kinds
            problems.append(f"{full}: does not parse: {e}")
    required_version = False
    for f, doc in docs.items():
        where = os.path.join(path, f)
        for tf in doc.get("terraform", []):
            if "required_version" in tf:
                required_version = True
            for rp in tf.get("required_providers", []):
                for name, spec in rp.items():
                    if name.startswith("__"):
                        continue
                    if not isinstance(spec, dict) or "source" not in spec:
                        problems.append(f"{where}: provider {name} has no source")
                    elif not unquote(spec.get("version", "")).strip():
                        problems.append(f"{where}: provider {name} has no pinned version")
        for kind in ("variable", "output"):
            for name, body in blocks(doc, kind):
                if not unquote(body.get("description", "")).strip():
                    problems.append(f"{where}: {kind} {name} has no description")
        if is_module:
            for name, _ in blocks(doc, "provider"):
                problems.append(f"{where}: module configures provider {name}; leave that to the caller")
        for kind in ("provider", "resource", "data", "module", "locals"):
            for entry in doc.get(kind, []):
                for key, value in _pairs(entry):
                    if key in CREDENTIAL_KEYS and isinstance(value, str) and not value.startswith("${"):
                        problems.append(f"{where}: {kind} sets {key} to a literal; credentials do not belong in code")
        for s in walk_strings(doc):
            if CREDENTIAL_VALUES.search(s):
                problems.append(f"{where}: a string looks like a credential")
        for name, body in blocks(doc, "module"):
            source = unquote(body.get("source", ""))
            if not source.startswith("../") and not source.startswith("./"):
                problems.append(f"{where}: module {name} source {source!r} is not a local path")
            elif not os.path.isdir(os.path.join(path, source)):
                problems.append(f"{where}: module {name} source {source} does not exist")
    if files and not required_version:
        problems.append(f"{path}: no terraform {{ required_version }}")
    return docs


def _pairs(value):
    """Every key/value pair at any depth."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _pairs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _pairs(v)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    problems = []
    dirs = []
    for base, is_module in (("modules", True), ("examples", False)):
        top = os.path.join(root, base)
        for d in sorted(os.listdir(top)):
            if os.path.isdir(os.path.join(top, d)):
                dirs.append((os.path.join(top, d), is_module))
    if not dirs:
        problems.append(f"{root}: no modules or examples")
    for d, is_module in dirs:
        docs = check_dir(d, is_module, problems)
        name = os.path.basename(d)
        if is_module and name != "core":
            calls = [unquote(b.get("source", "")) for doc in docs.values() for _, b in blocks(doc, "module")]
            if "../core" not in calls:
                problems.append(f"{d}: a provider module must use ../core for the cluster's shape")
    for p in problems:
        print(p)
    print(f"check_modules: {len(dirs)} directories, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
