//! The default gateway, where NAT-PMP and PCP requests go, read from Linux's `/proc/net/route`.

use std::net::Ipv4Addr;

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
/// The table of a home machine has a handful of lines; a longer file is not read further.
const MAX_LINES: usize = 4096;

/// The gateway of the default IPv4 route with the lowest metric, from the text of
/// `/proc/net/route` (addresses there are the kernel's u32 in host byte order, printed in hex).
pub fn default_gateway(table: &str) -> Option<Ipv4Addr> {
    table
        .lines()
        .take(MAX_LINES)
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().take(8).collect();
            if f.len() < 8 {
                return None;
            }
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            let (dest, gateway, flags, metric, mask) = (
                hex(f[1])?,
                hex(f[2])?,
                hex(f[3])?,
                f[6].parse::<u32>().ok()?,
                hex(f[7])?,
            );
            let default =
                dest == 0 && mask == 0 && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY;
            (default && gateway != 0).then(|| (metric, Ipv4Addr::from(gateway.to_ne_bytes())))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gw)| gw)
}

/// The default gateway of this machine, if it has one.
pub fn system_default_gateway() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    default_gateway(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    #[test]
    fn picks_the_default_route_with_the_lowest_metric() {
        let table = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n\
             wlan0\t00000000\t{}\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             eth0\t00000000\t{}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             tun0\t00000000\t{}\t0002\t0\t0\t1\t00000000\t0\t0\t0\n",
            hex([192, 168, 77, 0]),
            hex([255, 255, 255, 0]),
            hex([10, 0, 0, 1]),
            hex([192, 168, 77, 1]),
            hex([172, 16, 0, 1]),
        );
        assert_eq!(
            default_gateway(&table),
            Some(Ipv4Addr::new(192, 168, 77, 1))
        );
    }

    #[test]
    fn no_default_route_or_garbage_is_none() {
        assert_eq!(default_gateway(""), None);
        assert_eq!(default_gateway("header\nnonsense line\n\u{0}\u{0}"), None);
        assert_eq!(
            default_gateway("h\neth0\t00000000\t00000000\t0003\t0\t0\t0\t00000000\n"),
            None
        );
    }
}
