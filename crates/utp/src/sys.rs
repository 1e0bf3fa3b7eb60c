//! What the driver asks of the OS beyond `send_to`/`recv_from`, on Linux: the "don't fragment"
//! bit for path MTU probes, the route's MTU towards a peer, and batches (UDP GSO: a train of
//! equal datagrams to one peer in one `sendmsg`; UDP GRO: a train received in one `recvmsg`).
//! Elsewhere, or where the kernel refuses, each does without: no probes' DF (they pass or are
//! lost), no route MTU (Ethernet is assumed), one datagram per call.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// Segments in one GSO send: the kernel takes up to 64 (UDP_MAX_SEGMENTS, 128 in newer ones).
pub const MAX_SEGMENTS: usize = 64;
/// Bytes in one GSO send: one IP datagram's worth.
pub const MAX_GSO_BYTES: usize = 65_000;

/// An IPv4 peer as the OS sees it: a v4-mapped IPv6 address (a dual-stack socket's) is IPv4 on
/// the wire.
pub fn wire_ip(addr: &SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        ip => ip,
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use std::mem::{size_of, zeroed};
    use std::os::fd::{AsRawFd, RawFd};

    // Not in every libc build of the crate (linux-gnu lacks them): the kernel's uapi values.
    const UDP_SEGMENT: libc::c_int = 103;
    const UDP_GRO: libc::c_int = 104;

    fn setsockopt_int(
        fd: RawFd,
        level: libc::c_int,
        name: libc::c_int,
        v: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: a valid fd and a c_int option value of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Whether the socket is IPv6 (a dual-stack one included).
    fn is_v6(fd: RawFd) -> bool {
        // SAFETY: getsockname into a zeroed storage of the size given.
        unsafe {
            let mut ss: libc::sockaddr_storage = zeroed();
            let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            libc::getsockname(
                fd,
                (&mut ss as *mut libc::sockaddr_storage).cast(),
                &mut len,
            ) == 0
                && i32::from(ss.ss_family) == libc::AF_INET6
        }
    }

    /// Sets the "don't fragment" policy for what the socket sends: `probe` sets DF and ignores
    /// the kernel's path MTU cache (a probe learns the path itself; too big for the interface is
    /// `EMSGSIZE`), otherwise DF is clear and the kernel fragments what exceeds the interface.
    /// For both IPv4 and IPv6 on a dual-stack socket.
    pub fn set_dont_fragment(sock: &impl AsRawFd, probe: bool) -> io::Result<()> {
        let fd = sock.as_raw_fd();
        let v4 = if probe {
            libc::IP_PMTUDISC_PROBE
        } else {
            libc::IP_PMTUDISC_DONT
        };
        let r4 = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, v4);
        if !is_v6(fd) {
            return r4;
        }
        let v6 = if probe {
            libc::IPV6_PMTUDISC_PROBE
        } else {
            libc::IPV6_PMTUDISC_DONT
        };
        let r6 = setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, v6);
        // A v6-only socket may refuse the IPv4 option: what matters is the one it sends with.
        r6.or(r4)
    }

    /// Asks the kernel to hand trains of datagrams over whole (GRO); whether it will.
    pub fn enable_gro(sock: &impl AsRawFd) -> bool {
        setsockopt_int(sock.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 1).is_ok()
    }

    /// The MTU of the route to `peer` (a socket connected to it, then IP_MTU), if the OS says.
    pub fn route_mtu(peer: SocketAddr) -> Option<usize> {
        let ip = wire_ip(&peer);
        let to = SocketAddr::new(ip, peer.port().max(1));
        let bind: SocketAddr = match ip {
            IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let s = std::net::UdpSocket::bind(bind).ok()?;
        s.connect(to).ok()?;
        let (level, name) = match ip {
            IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU),
            IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU),
        };
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid fd and a c_int of the size given.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (r == 0 && v > 0).then_some(v as usize)
    }

    /// Sends `train`, datagrams of `segment` bytes back to back (the last may be shorter), to
    /// `to` in one `sendmsg` as UDP GSO; a train of one datagram as an ordinary send.
    pub fn send_train(
        sock: &impl AsRawFd,
        train: &[u8],
        segment: usize,
        to: SocketAddr,
    ) -> io::Result<()> {
        let addr = socket2::SockAddr::from(to);
        let mut iov = libc::iovec {
            iov_base: train.as_ptr() as *mut libc::c_void,
            iov_len: train.len(),
        };
        // SAFETY: CMSG_SPACE of a constant size.
        let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
        let mut control = [0u64; 4]; // aligned for cmsghdr; 32 bytes >= space
                                     // SAFETY: msghdr zeroed, then pointing at live buffers (addr, iov, control) that outlive
                                     // the call; the cmsg written lies within `control` (space <= 32).
        unsafe {
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = addr.as_ptr() as *mut libc::c_void;
            msg.msg_namelen = addr.len();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if train.len() > segment {
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = space as _;
                let cm = libc::CMSG_FIRSTHDR(&msg);
                (*cm).cmsg_level = libc::SOL_UDP;
                (*cm).cmsg_type = UDP_SEGMENT;
                (*cm).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                let size = segment.min(u16::MAX as usize) as u16;
                std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), size);
            }
            let r = libc::sendmsg(sock.as_raw_fd(), &msg, 0);
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn from_storage(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(ss.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let a =
                    unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let a =
                    unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Receives into `buf`: (bytes, sender, segment size when the kernel coalesced a train).
    pub fn recv_gro(
        sock: &impl AsRawFd,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<usize>)> {
        let mut control = [0u64; 8];
        // SAFETY: msghdr zeroed, pointing at live buffers; the kernel fills at most their sizes;
        // the cmsgs read are within msg_controllen, as the CMSG macros walk them.
        unsafe {
            let mut ss: libc::sockaddr_storage = zeroed();
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = (&mut ss as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of::<[u64; 8]>() as _;
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut segment = None;
            let mut cm = libc::CMSG_FIRSTHDR(&msg);
            while !cm.is_null() {
                if (*cm).cmsg_level == libc::SOL_UDP && (*cm).cmsg_type == UDP_GRO {
                    let s = std::ptr::read_unaligned(libc::CMSG_DATA(cm).cast::<libc::c_int>());
                    if s > 0 {
                        segment = Some(s as usize);
                    }
                }
                cm = libc::CMSG_NXTHDR(&msg, cm);
            }
            let from = from_storage(&ss)
                .ok_or_else(|| io::Error::other("datagram from a non-IP address"))?;
            Ok((n as usize, from, segment))
        }
    }
}

#[cfg(target_os = "linux")]
pub use imp::*;

#[cfg(not(target_os = "linux"))]
mod fallback {
    use super::*;
    pub fn set_dont_fragment<T>(_: &T, _: bool) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    pub fn enable_gro<T>(_: &T) -> bool {
        false
    }
    pub fn route_mtu(_: SocketAddr) -> Option<usize> {
        None
    }
}

#[cfg(not(target_os = "linux"))]
pub use fallback::*;

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn loopback_route_mtu_is_known() {
        // 65536 on loopback (IP_MTU says 65535 at times); whatever it is, above Ethernet's.
        for peer in ["127.0.0.1:9", "[::ffff:127.0.0.1]:9"] {
            let mtu = route_mtu(peer.parse().unwrap());
            assert!(mtu.is_some_and(|m| m >= 1500), "{peer}: {mtu:?}");
        }
    }

    /// A GSO train arrives as its datagrams, coalesced or not; probes' DF toggles.
    #[test]
    fn gso_train_arrives_as_its_datagrams() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let gro = enable_gro(&b);
        set_dont_fragment(&a, true).unwrap();
        set_dont_fragment(&a, false).unwrap();
        let segs: Vec<Vec<u8>> = (0..4u8)
            .map(|i| vec![i; if i == 3 { 50 } else { 100 }])
            .collect();
        send_train(&a, &segs.concat(), 100, b.local_addr().unwrap()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while got.len() < 4 {
            let (n, from, seg) = recv_gro(&b, &mut buf).unwrap();
            assert_eq!(from, a.local_addr().unwrap());
            assert!(gro || seg.is_none());
            got.extend(buf[..n].chunks(seg.unwrap_or(n)).map(<[u8]>::to_vec));
        }
        assert_eq!(got, segs);
    }
}
