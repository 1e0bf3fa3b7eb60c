//! UPnP IGD v1/v2: the device description (which WAN connection service to talk to and where), and
//! the SOAP actions AddPortMapping, DeletePortMapping and GetExternalIPAddress.

use std::net::IpAddr;

use crate::http::Url;
use crate::{ParseError, Protocol};

/// Services of a description considered; a router has a handful.
const MAX_SERVICES: usize = 64;

/// The WAN connection services that take port mappings, most capable first.
const WAN_SERVICES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// A WAN connection service: where to POST and which service type to name in the SOAPAction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub service_type: String,
    pub control: Url,
}

/// The WAN connection service of a device description fetched from `location`.
pub fn find_service(description: &[u8], location: &Url) -> Result<Service, ParseError> {
    if description.len() > crate::http::MAX_BODY {
        return Err(ParseError::Long(description.len()));
    }
    let xml = std::str::from_utf8(description).map_err(|_| ParseError::Malformed("not UTF-8"))?;
    let base = match elements(xml, "URLBase").next().map(unescape) {
        Some(b) if !b.trim().is_empty() => {
            Url::parse(b.trim()).unwrap_or_else(|_| location.clone())
        }
        _ => location.clone(),
    };
    let mut found: Vec<(usize, Service)> = Vec::new();
    for service in elements(xml, "service").take(MAX_SERVICES) {
        let Some(kind) = elements(service, "serviceType")
            .next()
            .map(|s| unescape(s).trim().to_string())
        else {
            continue;
        };
        let Some(rank) = WAN_SERVICES.iter().position(|w| *w == kind) else {
            continue;
        };
        let Some(control) = elements(service, "controlURL").next() else {
            continue;
        };
        if let Ok(control) = base.join(&unescape(control)) {
            found.push((
                rank,
                Service {
                    service_type: kind,
                    control,
                },
            ));
        }
    }
    found
        .into_iter()
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, s)| s)
        .ok_or(ParseError::Malformed("no WAN connection service"))
}

/// The inner text of each element named `local` (any namespace prefix), in order. Elements of the
/// same name nested inside one another are not split apart; IGD descriptions have none.
fn elements<'a>(xml: &'a str, local: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let mut rest = xml;
    std::iter::from_fn(move || loop {
        let open = rest.find('<')?;
        let after = &rest[open + 1..];
        let name_end = after.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
        let name = &after[..name_end];
        let tag_end = after.find('>')?;
        let is_match = !name.starts_with(['/', '?', '!'])
            && name.rsplit(':').next() == Some(local)
            && !after[..tag_end].ends_with('/');
        if !is_match {
            rest = &after[tag_end + 1..];
            continue;
        }
        let body = &after[tag_end + 1..];
        let close = format!("</{name}>");
        let Some(end) = body.find(&close) else {
            rest = body;
            continue;
        };
        rest = &body[end + close.len()..];
        return Some(&body[..end]);
    })
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A SOAP action: the `SOAPAction` header value and the body.
pub struct Action {
    pub soap_action: String,
    pub body: Vec<u8>,
}

fn action(service: &Service, name: &str, args: &[(&str, String)]) -> Action {
    let mut inner = String::new();
    for (k, v) in args {
        inner.push_str(&format!("<{k}>{}</{k}>", escape(v)));
    }
    let body = format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{name} xmlns:u=\"{}\">{inner}</u:{name}></s:Body></s:Envelope>\r\n",
        service.service_type
    );
    Action {
        soap_action: format!("\"{}#{name}\"", service.service_type),
        body: body.into_bytes(),
    }
}

/// AddPortMapping: forward `external` on the router to `client:internal`, for `lease` seconds
/// (0 asks for a permanent mapping, which IGD v2 refuses).
pub fn add_port_mapping(
    service: &Service,
    protocol: Protocol,
    external: u16,
    client: IpAddr,
    internal: u16,
    lease: u32,
    description: &str,
) -> Action {
    action(
        service,
        "AddPortMapping",
        &[
            ("NewRemoteHost", String::new()),
            ("NewExternalPort", external.to_string()),
            ("NewProtocol", protocol.upnp_name().to_string()),
            ("NewInternalPort", internal.to_string()),
            ("NewInternalClient", client.to_string()),
            ("NewEnabled", "1".to_string()),
            ("NewPortMappingDescription", description.to_string()),
            ("NewLeaseDuration", lease.to_string()),
        ],
    )
}

pub fn delete_port_mapping(service: &Service, protocol: Protocol, external: u16) -> Action {
    action(
        service,
        "DeletePortMapping",
        &[
            ("NewRemoteHost", String::new()),
            ("NewExternalPort", external.to_string()),
            ("NewProtocol", protocol.upnp_name().to_string()),
        ],
    )
}

pub fn get_external_ip(service: &Service) -> Action {
    action(service, "GetExternalIPAddress", &[])
}

/// UPnP error codes the driver reacts to (IGD WANIPConnection:2 §2.4).
pub const CONFLICT_IN_MAPPING: u32 = 718;
pub const ONLY_PERMANENT_LEASES: u32 = 725;

/// What a SOAP reply said.
#[derive(Debug, PartialEq, Eq)]
pub enum SoapReply {
    Ok,
    /// A UPnP fault: its `errorCode` (0 if it had none) and description.
    Fault(u32, String),
}

/// Reads a SOAP reply body; an HTTP 500 with a `UPnPError` is a fault.
pub fn parse_soap(body: &[u8]) -> Result<SoapReply, ParseError> {
    if body.len() > crate::http::MAX_BODY {
        return Err(ParseError::Long(body.len()));
    }
    let xml = std::str::from_utf8(body).map_err(|_| ParseError::Malformed("not UTF-8"))?;
    if elements(xml, "Fault").next().is_some() || elements(xml, "UPnPError").next().is_some() {
        let code = elements(xml, "errorCode")
            .next()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0);
        let text: String = elements(xml, "errorDescription")
            .next()
            .map(unescape)
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Ok(SoapReply::Fault(code, text));
    }
    if elements(xml, "Body").next().is_none() {
        return Err(ParseError::Malformed("no SOAP body"));
    }
    Ok(SoapReply::Ok)
}

/// The address in a GetExternalIPAddress reply.
pub fn parse_external_ip(body: &[u8]) -> Result<IpAddr, ParseError> {
    if body.len() > crate::http::MAX_BODY {
        return Err(ParseError::Long(body.len()));
    }
    let xml = std::str::from_utf8(body).map_err(|_| ParseError::Malformed("not UTF-8"))?;
    elements(xml, "NewExternalIPAddress")
        .next()
        .and_then(|t| t.trim().parse().ok())
        .ok_or(ParseError::Malformed("no NewExternalIPAddress"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIPTION: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>1</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<controlURL>/ctl/L3F</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>/ctl/IPConn?a=1&amp;b=2</controlURL>
<eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service>
<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType>
<controlURL>/ctl/PPP</controlURL></service>
</serviceList></device></deviceList></device></deviceList></device></root>"#;

    #[test]
    fn picks_the_wan_ip_connection_of_a_description() {
        let location = Url::parse("http://192.168.77.1:41057/rootDesc.xml").unwrap();
        let s = find_service(DESCRIPTION.as_bytes(), &location).unwrap();
        assert_eq!(
            s.service_type,
            "urn:schemas-upnp-org:service:WANIPConnection:1"
        );
        assert_eq!(s.control.path, "/ctl/IPConn?a=1&b=2");
        assert_eq!(s.control.addr, location.addr);
        let v2 = DESCRIPTION.replace("WANIPConnection:1", "WANIPConnection:2");
        assert!(find_service(v2.as_bytes(), &location)
            .unwrap()
            .service_type
            .ends_with(":2"));
        let based = DESCRIPTION.replace(
            "<specVersion>",
            "<URLBase>http://192.168.77.1:5000/</URLBase><specVersion>",
        );
        assert_eq!(
            find_service(based.as_bytes(), &location)
                .unwrap()
                .control
                .addr
                .port(),
            5000
        );
        assert!(find_service(b"<root><service/></root>", &location).is_err());
        assert!(find_service(b"<root><service><serviceType>", &location).is_err());
    }

    #[test]
    fn add_port_mapping_body_names_every_argument() {
        let service = Service {
            service_type: "urn:schemas-upnp-org:service:WANIPConnection:1".into(),
            control: Url::parse("http://192.168.77.1:1/ctl").unwrap(),
        };
        let a = add_port_mapping(
            &service,
            Protocol::Udp,
            6881,
            "192.168.77.2".parse().unwrap(),
            6881,
            3600,
            "spore <peer>",
        );
        assert_eq!(
            a.soap_action,
            "\"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\""
        );
        let body = String::from_utf8(a.body).unwrap();
        assert!(body.contains("<u:AddPortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\"><NewRemoteHost></NewRemoteHost><NewExternalPort>6881</NewExternalPort><NewProtocol>UDP</NewProtocol><NewInternalPort>6881</NewInternalPort><NewInternalClient>192.168.77.2</NewInternalClient><NewEnabled>1</NewEnabled><NewPortMappingDescription>spore &lt;peer&gt;</NewPortMappingDescription><NewLeaseDuration>3600</NewLeaseDuration></u:AddPortMapping>"), "{body}");
    }

    #[test]
    fn soap_replies_and_faults() {
        let ok = br#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewExternalIPAddress>11.11.11.1</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>"#;
        assert_eq!(parse_soap(ok), Ok(SoapReply::Ok));
        assert_eq!(parse_external_ip(ok), Ok("11.11.11.1".parse().unwrap()));
        let fault = br#"<s:Envelope><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"#;
        assert_eq!(
            parse_soap(fault),
            Ok(SoapReply::Fault(718, "ConflictInMappingEntry".into()))
        );
        assert!(parse_soap(b"garbage").is_err());
        assert!(parse_external_ip(b"<NewExternalIPAddress>x</NewExternalIPAddress>").is_err());
    }
}
