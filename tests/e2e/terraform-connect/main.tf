# A small stack applied through airlock's HTTPS_PROXY listener (tests/e2e/test_connect.py). The
# provider is left at its defaults: AWS's own endpoint names, S3 addressed virtual-hosted
# (bucket.s3.us-west-2.amazonaws.com). The environment holds the agent's keys, HTTPS_PROXY and
# the CA bundle, and nothing else.
terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }
}

variable "name" {
  type = string
}

provider "aws" {
  region = "us-west-2"
}

data "aws_caller_identity" "me" {}

data "aws_db_instances" "all" {}

resource "aws_s3_bucket" "data" {
  bucket        = var.name
  force_destroy = true
}

resource "aws_s3_object" "readme" {
  bucket  = aws_s3_bucket.data.id
  key     = "README.txt"
  content = "written by terraform through the tunnel\n"
}

resource "aws_dynamodb_table" "items" {
  name         = var.name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  attribute {
    name = "pk"
    type = "S"
  }
}

output "caller_arn" {
  value = data.aws_caller_identity.me.arn
}

output "db_instances" {
  value = data.aws_db_instances.all.instance_identifiers
}
