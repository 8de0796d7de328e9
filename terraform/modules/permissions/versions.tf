terraform {
  # Terraform 1.0 is the oldest release these modules are checked with (terraform fmt in the
  # test suite); nothing here needs a newer one. No providers: this module only computes.
  required_version = ">= 1.0.0"
}
