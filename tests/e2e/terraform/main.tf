# A small stack that an agent might apply and destroy. The tests run it through airlock against
# moto with nothing but the agent's proxy-only credentials, taken from the environment together
# with AWS_ENDPOINT_URL and AWS_CA_BUNDLE.
terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }
}

variable "name" {
  type    = string
  default = "airlock-e2e"
}

provider "aws" {
  region = "us-west-2"
  # Without this the provider addresses buckets as bucket.<endpoint host>, which does not resolve.
  s3_use_path_style = true
}

resource "aws_vpc" "main" {
  cidr_block = "10.42.0.0/16"
  tags       = { Name = var.name }
}

resource "aws_subnet" "a" {
  vpc_id            = aws_vpc.main.id
  cidr_block        = "10.42.1.0/24"
  availability_zone = "us-west-2a"
  tags              = { Name = "${var.name}-a" }
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "database access from inside the VPC"
  vpc_id      = aws_vpc.main.id

  ingress {
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = [aws_vpc.main.cidr_block]
  }
}

resource "aws_s3_bucket" "data" {
  bucket        = "${var.name}-data"
  force_destroy = true
}

resource "aws_s3_object" "readme" {
  bucket       = aws_s3_bucket.data.id
  key          = "docs/read me.txt"
  content      = "written by terraform through airlock\n"
  content_type = "text/plain"
}

resource "aws_dynamodb_table" "items" {
  name         = "${var.name}-items"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"

  attribute {
    name = "pk"
    type = "S"
  }
}

resource "aws_db_instance" "db" {
  identifier             = "${var.name}-db"
  engine                 = "postgres"
  engine_version         = "16.3"
  instance_class         = "db.t3.micro"
  allocated_storage      = 20
  username               = "airlock"
  password               = "not-a-real-password-1"
  skip_final_snapshot    = true
  vpc_security_group_ids = [aws_security_group.db.id]
}

resource "aws_db_snapshot" "db" {
  db_instance_identifier = aws_db_instance.db.identifier
  db_snapshot_identifier = "${var.name}-snap"
}

output "vpc_id" {
  value = aws_vpc.main.id
}

output "subnet_id" {
  value = aws_subnet.a.id
}

output "security_group_id" {
  value = aws_security_group.db.id
}
