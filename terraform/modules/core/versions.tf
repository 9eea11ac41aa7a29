# The core module needs no provider: everything it does is computed from its variables, so it
# initialises, validates and runs `terraform test` with no registry in reach.
terraform {
  required_version = ">= 1.9.0"
}
