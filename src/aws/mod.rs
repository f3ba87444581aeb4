//! Facts about AWS, taken from AWS's own models (`data/aws-model.json`, generated from
//! botocore by `tools/gen_aws_model.py`): services, their protocols, and where their
//! endpoints are. Pure code: the data is embedded at build time.

pub mod endpoint;
pub mod model;

pub use model::{model, Model, Service};

/// The wire protocols of AWS services, which decide how an error must be shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Query,
    Ec2,
    Json,
    RestJson,
    RestXml,
    RpcV2Cbor,
}

impl Protocol {
    pub fn from_model(name: &str) -> Option<Protocol> {
        Some(match name {
            "query" => Protocol::Query,
            "ec2" => Protocol::Ec2,
            "json" => Protocol::Json,
            "rest-json" => Protocol::RestJson,
            "rest-xml" => Protocol::RestXml,
            "smithy-rpc-v2-cbor" => Protocol::RpcV2Cbor,
            _ => return None,
        })
    }
}
