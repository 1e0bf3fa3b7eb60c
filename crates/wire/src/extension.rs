//! The BEP 10 extension handshake.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bencode::{DictBuilder, Owned, Value};

use crate::WireError;

/// What a peer says about itself in its extension handshake. Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtensionHandshake {
    /// Extension name → the message id the sender wants to receive it under (0 disables).
    pub extensions: BTreeMap<String, u8>,
    /// The sender's listen port.
    pub listen_port: Option<u16>,
    pub client: Option<String>,
    /// How many outstanding requests the sender accepts.
    pub request_queue: Option<u32>,
    /// BEP 9: size of the info dictionary.
    pub metadata_size: Option<u64>,
    /// The receiver's address as the sender sees it.
    pub your_ip: Option<IpAddr>,
}

impl ExtensionHandshake {
    pub fn encode(&self) -> Vec<u8> {
        let mut m = DictBuilder::new();
        for (name, id) in &self.extensions {
            m.insert(name, Owned::Int(i64::from(*id)));
        }
        let mut d = DictBuilder::new();
        d.insert("m", m.build());
        if let Some(p) = self.listen_port {
            d.insert("p", Owned::Int(i64::from(p)));
        }
        if let Some(v) = &self.client {
            d.insert("v", Owned::str(v));
        }
        if let Some(q) = self.request_queue {
            d.insert("reqq", Owned::Int(i64::from(q)));
        }
        if let Some(size) = self.metadata_size {
            d.insert("metadata_size", Owned::Int(size as i64));
        }
        if let Some(ip) = self.your_ip {
            let bytes = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            d.insert("yourip", Owned::Bytes(bytes));
        }
        d.build().encode()
    }

    pub fn decode(payload: &[u8]) -> Result<ExtensionHandshake, WireError> {
        let limits = bencode::Limits {
            max_depth: 8,
            max_values: 4096,
            max_input: 64 * 1024,
        };
        let value = bencode::decode_with(payload, bencode::Mode::Tolerant, limits)
            .map_err(|e| WireError::BadExtension(e.to_string()))?;
        let dict = value
            .as_dict()
            .ok_or_else(|| WireError::BadExtension("not a dictionary".into()))?;
        let mut hs = ExtensionHandshake::default();
        if let Some(m) = dict.get(b"m").and_then(Value::as_dict) {
            for (name, id) in m.iter() {
                let (Ok(name), Some(id)) = (std::str::from_utf8(name), id.as_int()) else {
                    continue;
                };
                if let Ok(id) = u8::try_from(id) {
                    hs.extensions.insert(name.to_string(), id);
                }
            }
        }
        let int = |k: &[u8]| dict.get(k).and_then(Value::as_int);
        hs.listen_port = int(b"p")
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0);
        hs.client = dict
            .get(b"v")
            .and_then(Value::as_bytes)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        hs.request_queue = int(b"reqq").and_then(|q| u32::try_from(q).ok());
        hs.metadata_size = int(b"metadata_size").and_then(|s| u64::try_from(s).ok());
        hs.your_ip = dict
            .get(b"yourip")
            .and_then(Value::as_bytes)
            .and_then(|b| match b.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
                _ => None,
            });
        Ok(hs)
    }

    /// The id to send extension `name` under, if the peer supports it.
    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.extensions.get(name).copied().filter(|&id| id != 0)
    }
}
