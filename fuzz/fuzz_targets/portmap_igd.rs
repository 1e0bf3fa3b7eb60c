#![no_main]
//! A router's device description and SOAP replies: never a panic; what parses stays bounded.

use libfuzzer_sys::fuzz_target;
use portmap::{http::Url, igd};

fuzz_target!(|data: &[u8]| {
    let location = Url::parse("http://192.168.1.1:5000/rootDesc.xml").expect("fixed URL");
    if let Ok(service) = igd::find_service(data, &location) {
        assert!(service.service_type.len() <= data.len());
        assert!(service.control.path.len() <= data.len() + location.path.len());
    }
    if let Ok(igd::SoapReply::Fault(_, text)) = igd::parse_soap(data) {
        assert!(text.chars().count() <= 200);
    }
    let _ = igd::parse_external_ip(data);
});
