//! One uTP connection as a sans-IO state machine: datagrams and times in, datagrams out.

use std::collections::VecDeque;

use thiserror::Error;

use crate::ledbat::Ledbat;
use crate::mtu::PathMtu;
use crate::packet::{Header, Packet, PacketError, PacketType, HEADER_LEN, MAX_SACK_BYTES};

/// Microseconds on the caller's clock (any epoch; only differences and the low 32 bits, which
/// go on the wire as timestamps, are used).
pub type Micros = u64;

/// Bytes of a datagram besides the payload, at most: the 20-byte header and a selective ack of up
/// to 34 bytes. Packets are sized for the largest, so a retransmission carrying a longer
/// selective ack than the first transmission still fits.
pub const PACKET_OVERHEAD: usize = HEADER_LEN + 2 + MAX_SACK_BYTES;
/// Payload bytes of the largest packet: what a 1500-byte Ethernet MTU carries over IPv4 (1472
/// bytes of UDP payload). Path MTU discovery ([`crate::mtu`]) searches up to this from 548-byte
/// datagrams; the driver lowers it to the route's MTU (IPv6 headers are 20 bytes longer).
pub const DEFAULT_PAYLOAD: usize =
    1500 - crate::mtu::IPV4_HEADER - crate::mtu::UDP_HEADER - PACKET_OVERHEAD;
/// Unsent plus unacknowledged bytes a connection holds (what `write` accepts up to).
pub const DEFAULT_SEND_BUFFER: usize = 1 << 20;
/// Received bytes not yet read plus those held out of order: the window we advertise.
pub const DEFAULT_RECV_BUFFER: usize = 1 << 20;
/// Packets past the next expected one we keep out of order: what a selective ack can name.
pub const MAX_REORDER: usize = MAX_SACK_BYTES * 8 + 1;
/// Packets in flight at once, whatever the windows say (a fraction of the 16-bit sequence space).
pub const MAX_IN_FLIGHT: usize = 4096;
/// RFC 6298: initial RTO 1 s, floor 1 s… we floor at 500 ms as libtorrent does, since uTP's
/// RTT includes a deliberate 100 ms of queue; ceiling 60 s.
pub const INITIAL_RTO: Micros = 1_000_000;
pub const MIN_RTO: Micros = 500_000;
pub const MAX_RTO: Micros = 60_000_000;
/// Consecutive timeouts before the connection is given up: 5 (libtorrent resends 3 times, which
/// gives up under 15 % loss), so a peer that vanished (killed, no FIN) is dropped within about
/// 30 s at the least RTO (0.5 + 1 + ... + 16 s), not two minutes, and its requests go to others.
pub const MAX_TIMEOUTS: u32 = 5;
pub const MAX_SYN_TIMEOUTS: u32 = 4;
/// In-order data packets received before an ack goes at once; fewer wait up to [`DELAYED_ACK`].
/// Acking every pass over the socket (about every 25 packets on loopback) spent a fifth of a
/// downloader's CPU in `sendto`, and each ack woke the sender. 64 packets are under a tenth of
/// the default window.
pub const ACK_EVERY: u32 = 64;
/// How long an ack for fewer than [`ACK_EVERY`] packets waits (TCP delays its acks up to 40 ms
/// and more; a short delay keeps the sender's clock of small windows running).
pub const DELAYED_ACK: Micros = 1_000;
/// Duplicate acks (or packets selectively acked past a hole) that declare the hole lost.
pub const DUP_ACK_THRESHOLD: u32 = 3;

#[derive(Clone, Debug)]
pub struct Config {
    /// Payload of the largest packet (the path MTU search's ceiling, less [`PACKET_OVERHEAD`]).
    pub max_payload: usize,
    pub send_buffer: usize,
    pub recv_buffer: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_payload: DEFAULT_PAYLOAD,
            send_buffer: DEFAULT_SEND_BUFFER,
            recv_buffer: DEFAULT_RECV_BUFFER,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    SynSent,
    Connected,
    /// Both sides' FINs sent and acknowledged.
    Closed,
    Reset,
    TimedOut,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UtpError {
    #[error("the connection was reset by the peer")]
    Reset,
    #[error("the connection timed out")]
    TimedOut,
    #[error("nothing to read yet")]
    WouldBlock,
    #[error("the connection is closed")]
    Closed,
    #[error("not a SYN")]
    NotSyn,
    #[error(transparent)]
    Packet(#[from] PacketError),
}

/// `a` before `b` in 16-bit sequence space.
fn seq_lt(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) < 0
}

#[derive(Debug)]
struct Sent {
    seq: u16,
    ty: PacketType,
    /// Its payload is `len` bytes of the send buffer from stream offset `start`: kept there, not
    /// in a copy of its own, until acknowledged, and copied from there into each transmission.
    start: u64,
    len: usize,
    sent_at: Micros,
    transmissions: u32,
    need_resend: bool,
    sacked: bool,
}

impl Sent {
    fn in_flight(&self) -> bool {
        !self.sacked && !self.need_resend && self.transmissions > 0
    }
}

/// A datagram to send. `probe`: a path MTU probe, to go with the "don't fragment" bit; should the
/// local stack refuse it as too big, tell [`Connection::probe_too_big`] and send it again without.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub data: Vec<u8>,
    pub probe: bool,
}

/// A received packet waiting for the ones before it.
#[derive(Debug)]
enum Held {
    Data(Vec<u8>),
    Fin,
}

#[derive(Debug)]
pub struct Connection {
    config: Config,
    state: State,
    recv_id: u16,
    send_id: u16,
    /// Next sequence number we send.
    seq_nr: u16,
    /// Last sequence number received in order.
    ack_nr: u16,
    /// Written bytes not yet acknowledged: the payloads of `inflight` in order (the first
    /// `unacked_bytes`), then those not yet sent.
    send_buf: VecDeque<u8>,
    /// Stream offset of `send_buf[0]`.
    send_base: u64,
    /// Oldest first: `inflight[i].seq == inflight[0].seq + i`.
    inflight: VecDeque<Sent>,
    unacked_bytes: usize,
    /// Payload bytes of `inflight` packets in flight (`Sent::in_flight`), and how many packets
    /// wait for retransmission: kept as packets change, so sending a packet costs no walk over
    /// the window.
    flight_bytes: usize,
    resends: usize,
    peer_wnd: usize,
    ledbat: Ledbat,
    mtu: PathMtu,
    srtt: Option<(Micros, Micros)>,
    rto: Micros,
    rto_deadline: Option<Micros>,
    timeouts: u32,
    /// After a timeout the oldest packet goes twice: with the window down to one packet, a single
    /// copy and its ack are one chance in a round, and under heavy loss (15 % each way) six lost
    /// rounds in a row gave a live connection up as dead.
    rto_copy: bool,
    dup_acks: u32,
    /// Losses up to this sequence number belong to the window already halved.
    recovery_until: u16,
    recv_buf: VecDeque<u8>,
    /// Index i holds sequence number `ack_nr + 1 + i`.
    reorder: VecDeque<Option<Held>>,
    reorder_bytes: usize,
    need_ack: bool,
    /// In-order data packets received since our last packet (which carried the ack), and when
    /// their ack is due at the latest.
    unacked_recv: u32,
    ack_due: Option<Micros>,
    last_wnd: usize,
    /// Our clock minus the peer's timestamp on its last packet: its `timestamp_difference`.
    reply_micro: u32,
    closing: bool,
    fin_sent: bool,
    eof: bool,
}

impl Connection {
    fn new(config: Config, recv_id: u16, send_id: u16, seq_nr: u16, state: State) -> Connection {
        let mtu = PathMtu::new(config.max_payload.max(1) + PACKET_OVERHEAD);
        let ledbat = Ledbat::new(mtu.floor() - PACKET_OVERHEAD);
        let last_wnd = config.recv_buffer;
        Connection {
            state,
            recv_id,
            send_id,
            seq_nr,
            ack_nr: 0,
            send_buf: VecDeque::new(),
            send_base: 0,
            inflight: VecDeque::new(),
            unacked_bytes: 0,
            flight_bytes: 0,
            resends: 0,
            peer_wnd: config.max_payload,
            ledbat,
            mtu,
            srtt: None,
            rto: INITIAL_RTO,
            rto_deadline: None,
            timeouts: 0,
            rto_copy: false,
            dup_acks: 0,
            recovery_until: seq_nr.wrapping_sub(1),
            recv_buf: VecDeque::new(),
            reorder: VecDeque::new(),
            reorder_bytes: 0,
            need_ack: false,
            unacked_recv: 0,
            ack_due: None,
            last_wnd,
            reply_micro: 0,
            closing: false,
            fin_sent: false,
            eof: false,
            config,
        }
    }

    /// Dials: `conn_id` is ours to receive on (random, unused towards that peer); the SYN goes
    /// out on the first [`Connection::poll_transmit`].
    pub fn connect(config: Config, conn_id: u16, now: Micros) -> Connection {
        Connection::connect_from(config, conn_id, 1, now)
    }

    /// [`Connection::connect`] with the SYN's sequence number chosen (BEP 29 says 1; libtorrent
    /// draws it at random, which is also fine).
    pub fn connect_from(config: Config, conn_id: u16, seq_nr: u16, _now: Micros) -> Connection {
        let mut c = Connection::new(
            config,
            conn_id,
            conn_id.wrapping_add(1),
            seq_nr,
            State::SynSent,
        );
        c.inflight.push_back(Sent {
            seq: seq_nr,
            ty: PacketType::Syn,
            start: 0,
            len: 0,
            sent_at: 0,
            transmissions: 0,
            need_resend: true,
            sacked: false,
        });
        c.resends = 1;
        c.seq_nr = seq_nr.wrapping_add(1);
        c
    }

    /// Answers a SYN: `seq_nr` is our initial sequence number (random). The acknowledging STATE
    /// goes out on the first [`Connection::poll_transmit`].
    pub fn accept(
        config: Config,
        syn: &[u8],
        seq_nr: u16,
        now: Micros,
    ) -> Result<Connection, UtpError> {
        let p = Packet::parse(syn)?;
        if p.header.ty != PacketType::Syn {
            return Err(UtpError::NotSyn);
        }
        let id = p.header.conn_id;
        let mut c = Connection::new(config, id.wrapping_add(1), id, seq_nr, State::Connected);
        c.ack_nr = p.header.seq_nr;
        c.peer_wnd = p.header.wnd_size as usize;
        c.reply_micro = (now as u32).wrapping_sub(p.header.timestamp);
        c.need_ack = true;
        Ok(c)
    }

    pub fn state(&self) -> State {
        self.state
    }
    /// The connection id the peer's packets carry (for demultiplexing).
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }
    pub fn cwnd(&self) -> usize {
        self.ledbat.cwnd()
    }
    pub fn queuing_delay(&self) -> Option<u32> {
        self.ledbat.queuing_delay()
    }
    pub fn rto(&self) -> Micros {
        self.rto
    }
    /// The path MTU search: floor (what packets are sized to) and ceiling, datagram bytes.
    pub fn path_mtu(&self) -> &PathMtu {
        &self.mtu
    }

    /// Lowers the largest datagram tried to `ceiling` bytes (the route's MTU less the IP and UDP
    /// headers, see [`crate::mtu::ceiling_for`]).
    pub fn limit_mtu(&mut self, ceiling: usize) {
        self.mtu.limit(ceiling.max(PACKET_OVERHEAD + 1));
        self.ledbat.set_mss(self.payload_size());
    }

    /// The local stack refused the probe just handed out as too big (`EMSGSIZE`): the search's
    /// ceiling drops below it. The caller sends it again without "don't fragment".
    pub fn probe_too_big(&mut self) {
        if let Some(seq) = self.mtu.probe_seq() {
            self.mtu.lost(seq);
        }
    }

    /// Payload of an ordinary packet: what fits the floor with a full selective ack.
    fn payload_size(&self) -> usize {
        self.mtu.floor().saturating_sub(PACKET_OVERHEAD).max(1)
    }
    /// Whether the peer has finished sending and everything it sent was read.
    pub fn is_eof(&self) -> bool {
        self.eof && self.recv_buf.is_empty()
    }
    /// Whether everything written has been sent and acknowledged.
    pub fn is_flushed(&self) -> bool {
        self.unsent() == 0 && self.inflight.iter().all(|s| s.ty == PacketType::Fin)
    }

    /// Whether our FIN went out and was acknowledged.
    pub fn fin_acked(&self) -> bool {
        self.fin_sent && self.inflight.is_empty()
    }

    fn error(&self) -> Option<UtpError> {
        match self.state {
            State::Reset => Some(UtpError::Reset),
            State::TimedOut => Some(UtpError::TimedOut),
            _ => None,
        }
    }

    /// Queues bytes to send; returns how many fit in the send buffer.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, UtpError> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        if self.closing || self.state == State::Closed {
            return Err(UtpError::Closed);
        }
        let n = self.writable().min(data.len());
        self.send_buf.extend(&data[..n]);
        Ok(n)
    }

    /// Reads received bytes in order; `Ok(0)` (with a non-empty `buf`) at the end of the stream.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, UtpError> {
        if self.recv_buf.is_empty() {
            if self.eof || buf.is_empty() {
                return Ok(0);
            }
            return Err(self.error().unwrap_or(UtpError::WouldBlock));
        }
        let n = buf.len().min(self.recv_buf.len());
        let (a, b) = self.recv_buf.as_slices();
        let from_a = a.len().min(n);
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.recv_buf.drain(..n);
        // A window we advertised small has reopened: say so, or a sender stalled on it waits
        // for its timeout.
        if self.last_wnd < 4 * self.config.max_payload && self.window() > self.last_wnd {
            self.need_ack = true;
        }
        Ok(n)
    }

    /// Whether [`Connection::poll_datagram`] may have something to send now, besides what an
    /// arriving packet or a timer would bring: the driver need not be woken for a write that
    /// only queues behind a full window (the next ack sends it), nor for a read that leaves the
    /// advertised window as it was.
    pub fn wants_transmit(&self) -> bool {
        if self.need_ack || self.resends > 0 || (self.closing && !self.fin_sent) {
            return true;
        }
        if self.state != State::Connected || self.unsent() == 0 {
            return false;
        }
        let window = self.ledbat.cwnd().min(self.peer_wnd);
        let flight = self.flight_bytes;
        flight == 0 || flight + self.unsent().min(self.payload_size()) <= window
    }

    /// Received bytes ready to read.
    pub fn readable(&self) -> usize {
        self.recv_buf.len()
    }

    /// Bytes [`Connection::write`] would take now.
    pub fn writable(&self) -> usize {
        self.config.send_buffer.saturating_sub(self.send_buf.len())
    }

    /// Written bytes not yet in any packet.
    fn unsent(&self) -> usize {
        self.send_buf.len() - self.unacked_bytes
    }

    /// Finishes our direction: a FIN follows the last written byte.
    pub fn close(&mut self) {
        self.closing = true;
    }

    fn window(&self) -> usize {
        self.config
            .recv_buffer
            .saturating_sub(self.recv_buf.len() + self.reorder_bytes)
    }

    fn flight(&self) -> usize {
        #[cfg(debug_assertions)]
        self.check_counters();
        self.flight_bytes
    }

    /// The counters against a walk over the window (tests only: the walk is what they save).
    #[cfg(debug_assertions)]
    fn check_counters(&self) {
        let walked: usize = self
            .inflight
            .iter()
            .filter(|s| s.in_flight())
            .map(|s| s.len)
            .sum();
        assert_eq!(self.flight_bytes, walked, "flight bytes");
        let mut at = self.send_base;
        for s in &self.inflight {
            assert_eq!(s.start, at, "payloads follow each other in the send buffer");
            at += s.len as u64;
        }
        assert_eq!(
            at - self.send_base,
            self.unacked_bytes as u64,
            "unacked bytes"
        );
        let resends = self.inflight.iter().filter(|s| s.need_resend).count();
        assert_eq!(self.resends, resends, "packets to resend");
    }

    /// Packet `idx` is to be sent again (lost, or a timeout).
    fn mark_resend(&mut self, idx: usize) {
        let Some(s) = self.inflight.get_mut(idx) else {
            return;
        };
        if s.need_resend || s.sacked {
            return;
        }
        if s.in_flight() {
            self.flight_bytes -= s.len;
        }
        s.need_resend = true;
        self.resends += 1;
    }

    /// Bytes newly acknowledged by a selective ack of packet `idx`.
    fn mark_sacked(&mut self, idx: usize) -> usize {
        let Some(s) = self.inflight.get_mut(idx) else {
            return 0;
        };
        if s.sacked || s.transmissions == 0 {
            return 0;
        }
        if s.in_flight() {
            self.flight_bytes -= s.len;
        }
        if s.need_resend {
            self.resends -= 1;
        }
        s.sacked = true;
        s.need_resend = false;
        let (seq, len) = (s.seq, s.len);
        if self.mtu.acked(seq) {
            self.ledbat.set_mss(self.payload_size());
        }
        len
    }

    pub fn handle_datagram(&mut self, datagram: &[u8], now: Micros) -> Result<(), UtpError> {
        let p = Packet::parse(datagram)?;
        let h = p.header;
        let expected_id = if h.ty == PacketType::Syn {
            self.send_id
        } else {
            self.recv_id
        };
        if h.conn_id != expected_id || matches!(self.state, State::Reset | State::TimedOut) {
            return Ok(());
        }
        if h.ty == PacketType::Reset {
            self.state = State::Reset;
            return Ok(());
        }
        self.reply_micro = (now as u32).wrapping_sub(h.timestamp);
        if h.ty == PacketType::Syn {
            // Our STATE answering it was lost: the dialer retransmits the SYN and sends nothing
            // else until answered, so our ack_nr is still the SYN's.
            if h.seq_nr == self.ack_nr {
                self.need_ack = true;
            }
            return Ok(());
        }
        if self.state == State::SynSent {
            if h.ty != PacketType::State || h.ack_nr != self.seq_nr.wrapping_sub(1) {
                return Ok(());
            }
            self.state = State::Connected;
            self.ack_nr = h.seq_nr.wrapping_sub(1);
        }
        self.peer_wnd = h.wnd_size as usize;
        self.handle_acks(&p, now);
        match h.ty {
            PacketType::Data => self.receive(h.seq_nr, Some(p.payload), now),
            PacketType::Fin => self.receive(h.seq_nr, None, now),
            _ => {}
        }
        if self.fin_sent && self.inflight.is_empty() && self.eof {
            self.state = State::Closed;
        }
        Ok(())
    }

    fn handle_acks(&mut self, p: &Packet, now: Micros) {
        let h = p.header;
        let flight_before = self.flight();
        let mut bytes_acked = 0;
        let mut rtt_sample = None;
        let Some(first) = self.inflight.front().map(|s| s.seq) else {
            self.dup_acks = 0;
            self.delay_sample(h.timestamp_diff, now);
            return;
        };
        let acked = h.ack_nr.wrapping_sub(first).wrapping_add(1) as usize;
        if acked <= self.inflight.len() && acked > 0 {
            let mut floor_rose = false;
            let mut freed = 0;
            for s in self.inflight.drain(..acked) {
                floor_rose |= self.mtu.acked(s.seq);
                if !s.sacked && s.transmissions > 0 {
                    bytes_acked += s.len;
                }
                if s.in_flight() {
                    self.flight_bytes -= s.len;
                }
                if s.need_resend {
                    self.resends -= 1;
                }
                freed += s.len;
                if s.transmissions == 1 {
                    rtt_sample = Some(now.saturating_sub(s.sent_at));
                }
            }
            self.unacked_bytes -= freed;
            self.send_buf.drain(..freed);
            self.send_base += freed as u64;
            if floor_rose {
                self.ledbat.set_mss(self.payload_size());
            }
            self.dup_acks = 0;
            self.timeouts = 0;
            self.rto_copy = false;
            self.rto_deadline = if self.inflight.is_empty() {
                None
            } else {
                Some(now + self.rto)
            };
        } else if h.ack_nr == first.wrapping_sub(1)
            && h.ty == PacketType::State
            && self.inflight.iter().any(|s| s.in_flight())
        {
            self.dup_acks += 1;
            if self.dup_acks == DUP_ACK_THRESHOLD {
                self.lost(0);
            }
        }
        if let Some(mask) = p.sack {
            bytes_acked += self.handle_sack(h.ack_nr, mask);
        }
        if let Some(r) = rtt_sample {
            self.rtt_sample(r);
        }
        self.delay_sample(h.timestamp_diff, now);
        self.ledbat.on_ack(bytes_acked, flight_before);
    }

    fn delay_sample(&mut self, diff: u32, now: Micros) {
        // Zero means the peer had no timestamp of ours yet.
        if diff != 0 {
            self.ledbat.on_delay_sample(diff, now);
        }
    }

    /// Marks what the bitmask acknowledges; a packet with [`DUP_ACK_THRESHOLD`] or more acked
    /// past it is lost. Returns the bytes newly acknowledged.
    fn handle_sack(&mut self, ack_nr: u16, mask: &[u8]) -> usize {
        let Some(first) = self.inflight.front().map(|s| s.seq) else {
            return 0;
        };
        let mut bytes = 0;
        for (i, byte) in mask.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) == 0 {
                    continue;
                }
                let seq = ack_nr.wrapping_add(2 + (i * 8 + bit) as u16);
                let idx = seq.wrapping_sub(first) as usize;
                bytes += self.mark_sacked(idx);
            }
        }
        let mut sacked_after = 0;
        let mut lost = Vec::new();
        for (i, s) in self.inflight.iter().enumerate().rev() {
            if s.sacked {
                sacked_after += 1;
            } else if sacked_after >= DUP_ACK_THRESHOLD && s.transmissions == 1 && !s.need_resend {
                lost.push(i);
            }
        }
        for i in lost {
            self.lost(i);
        }
        bytes
    }

    fn lost(&mut self, idx: usize) {
        let Some(seq) = self.inflight.get(idx).map(|s| s.seq) else {
            return;
        };
        self.mark_resend(idx);
        // A lost probe was too big, not a sign of congestion.
        if self.mtu.lost(seq) {
            return;
        }
        if seq_lt(self.recovery_until, seq) {
            self.ledbat.on_loss();
            self.recovery_until = self.seq_nr.wrapping_sub(1);
        }
    }

    fn rtt_sample(&mut self, r: Micros) {
        let (srtt, rttvar) = match self.srtt {
            None => (r, r / 2),
            Some((srtt, rttvar)) => {
                let rttvar = (3 * rttvar + srtt.abs_diff(r)) / 4;
                ((7 * srtt + r) / 8, rttvar)
            }
        };
        self.srtt = Some((srtt, rttvar));
        self.rto = (srtt + 4 * rttvar).clamp(MIN_RTO, MAX_RTO);
    }

    /// Takes data packet `seq` (`None`: the FIN). The next one expected goes straight into the
    /// receive buffer from the datagram; only one ahead of a hole is copied aside to wait.
    fn receive(&mut self, seq: u16, data: Option<&[u8]>, now: Micros) {
        let len = data.map_or(0, <[u8]>::len);
        let dist = seq.wrapping_sub(self.ack_nr) as usize;
        // In order, nothing held after it: the ack may wait for more. Anything else (a
        // duplicate, a hole the sender must hear of, a FIN, no room) is answered at once.
        let delay = dist == 1 && self.reorder.is_empty() && data.is_some();
        // 0 or "negative": a duplicate of something delivered; the ack answers it.
        if dist == 0 || dist > u16::MAX as usize / 2 || dist > MAX_REORDER || self.eof {
            self.need_ack = true;
            return;
        }
        if len > self.window() {
            self.need_ack = true;
            return;
        }
        if delay {
            self.unacked_recv += 1;
            if self.unacked_recv >= ACK_EVERY {
                self.need_ack = true;
            } else if self.ack_due.is_none() {
                self.ack_due = Some(now + DELAYED_ACK);
            }
        } else {
            self.need_ack = true;
        }
        if dist == 1 {
            // Its slot (if packets after it are held) is empty: it goes, and what it unblocks.
            self.reorder.pop_front();
            self.deliver(data);
        } else {
            if self.reorder.len() < dist {
                self.reorder.resize_with(dist, || None);
            }
            let slot = &mut self.reorder[dist - 1];
            if slot.is_none() {
                *slot = Some(data.map_or(Held::Fin, |d| Held::Data(d.to_vec())));
                self.reorder_bytes += len;
            }
            return;
        }
        while let Some(Some(_)) = self.reorder.front() {
            let Some(Some(held)) = self.reorder.pop_front() else {
                break;
            };
            match held {
                Held::Data(d) => {
                    self.reorder_bytes -= d.len();
                    self.deliver(Some(&d));
                }
                Held::Fin => self.deliver(None),
            }
        }
    }

    /// The packet after `ack_nr` is here (`None`: the FIN).
    fn deliver(&mut self, data: Option<&[u8]>) {
        self.ack_nr = self.ack_nr.wrapping_add(1);
        match data {
            Some(d) => self.recv_buf.extend(d),
            None => {
                self.eof = true;
                self.reorder.clear();
                self.reorder_bytes = 0;
            }
        }
    }

    /// The selective ack to send, if packets are held past a hole: the mask and its length.
    fn sack_mask(&self) -> Option<([u8; MAX_SACK_BYTES], usize)> {
        if self.reorder.len() < 2 {
            return None;
        }
        let mut mask = [0u8; MAX_SACK_BYTES];
        let len = (self.reorder.len() - 1).div_ceil(8).min(MAX_SACK_BYTES);
        for (i, slot) in self.reorder.iter().enumerate().skip(1) {
            if slot.is_some() && (i - 1) / 8 < len {
                mask[(i - 1) / 8] |= 1 << ((i - 1) % 8);
            }
        }
        Some((mask, len))
    }

    /// Appends packet `seq` to `out`: its header, the selective ack, and `len` bytes of the send
    /// buffer from stream offset `start` as its payload.
    fn write_packet(
        &mut self,
        ty: PacketType,
        seq: u16,
        (start, len): (u64, usize),
        now: Micros,
        out: &mut Vec<u8>,
    ) {
        let wnd = self.window();
        self.last_wnd = wnd;
        self.need_ack = false;
        self.unacked_recv = 0;
        self.ack_due = None;
        let h = Header {
            ty,
            conn_id: if ty == PacketType::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            timestamp: now as u32,
            timestamp_diff: self.reply_micro,
            wnd_size: wnd.min(u32::MAX as usize) as u32,
            seq_nr: seq,
            ack_nr: self.ack_nr,
        };
        let sack = if ty == PacketType::Syn {
            None
        } else {
            self.sack_mask()
        };
        out.reserve(PACKET_OVERHEAD + len);
        h.write(sack.as_ref().map(|(m, n)| &m[..*n]), &[], out);
        if len == 0 {
            return;
        }
        let at = (start - self.send_base) as usize;
        let (a, b) = self.send_buf.as_slices();
        if at < a.len() {
            let from_a = (a.len() - at).min(len);
            out.extend_from_slice(&a[at..at + from_a]);
            out.extend_from_slice(&b[..len - from_a]);
        } else {
            out.extend_from_slice(&b[at - a.len()..at - a.len() + len]);
        }
    }

    /// The next datagram to send, if any. Call until `None` after every input.
    pub fn poll_transmit(&mut self, now: Micros) -> Option<Vec<u8>> {
        self.poll_datagram(now).map(|t| t.data)
    }

    /// [`Connection::poll_transmit`], saying which datagram is a path MTU probe.
    pub fn poll_datagram(&mut self, now: Micros) -> Option<Transmit> {
        let mut data = Vec::new();
        let probe = self.poll_transmit_into(now, &mut data)?;
        Some(Transmit { data, probe })
    }

    /// [`Connection::poll_datagram`] without an allocation: appends the next datagram, if any, to
    /// `out` and says whether it is a path MTU probe. A driver gathers a pass's datagrams in one
    /// buffer this way, each payload copied once, from the send buffer.
    pub fn poll_transmit_into(&mut self, now: Micros, out: &mut Vec<u8>) -> Option<bool> {
        if self.state == State::Closed && self.need_ack {
            // The peer's FIN (or its retransmission) still wants its ack.
            let seq = self.seq_nr;
            self.write_packet(PacketType::State, seq, (0, 0), now, out);
            return Some(false);
        }
        if !matches!(self.state, State::SynSent | State::Connected) {
            return None;
        }
        if self.rto_copy {
            match self.inflight.front() {
                // Its retransmission goes first, below; the copy on the next call.
                Some(s) if s.need_resend => {}
                Some(s) if s.transmissions > 1 && !s.sacked => {
                    self.rto_copy = false;
                    // Counted in flight once: the copy is a second chance, not more data.
                    let (ty, seq, start, len) = (s.ty, s.seq, s.start, s.len);
                    self.write_packet(ty, seq, (start, len), now, out);
                    return Some(false);
                }
                _ => self.rto_copy = false,
            }
        }
        let window = self.ledbat.cwnd().min(self.peer_wnd);
        let flight = self.flight();
        let resend = if self.resends > 0 {
            self.inflight.iter().position(|s| s.need_resend)
        } else {
            None
        };
        if let Some(i) = resend {
            let len = self.inflight[i].len;
            if flight == 0 || flight + len <= window {
                self.resends -= 1;
                self.flight_bytes += len;
                let s = &mut self.inflight[i];
                s.need_resend = false;
                s.transmissions += 1;
                s.sent_at = now;
                let (ty, seq, start) = (s.ty, s.seq, s.start);
                self.write_packet(ty, seq, (start, len), now, out);
                self.arm_timer(now);
                return Some(false);
            }
        }
        if self.state == State::Connected
            && self.unsent() > 0
            && self.inflight.len() < MAX_IN_FLIGHT
        {
            // A probe is a full packet of the size tried, selective ack included; without
            // enough to send to fill it, an ordinary packet goes.
            let probe = self.mtu.probe_size(self.ledbat.cwnd()).and_then(|size| {
                let header =
                    HEADER_LEN + self.sack_mask().map_or(0, |(_, n)| 2 + n.div_ceil(4) * 4);
                let len = size.saturating_sub(header);
                (self.unsent() >= len).then_some(len)
            });
            let len = probe.unwrap_or_else(|| self.unsent().min(self.payload_size()));
            // A probe goes where an ordinary packet would: it may overshoot the window by the
            // difference, once a round trip. Waiting for room for it stalled windows of a few
            // packets, which the window's cap (flight plus one packet) never lets grow.
            let counted = len.min(self.payload_size());
            if flight == 0 || flight + counted <= window {
                let seq = self.seq_nr;
                let before = out.len();
                self.send_new(PacketType::Data, len, now, out);
                if probe.is_some() {
                    self.mtu.probe_sent(seq, out.len() - before);
                }
                return Some(self.mtu.probe_seq() == Some(seq));
            }
        }
        if self.state == State::Connected && self.closing && !self.fin_sent && self.unsent() == 0 {
            self.fin_sent = true;
            self.send_new(PacketType::Fin, 0, now, out);
            return Some(false);
        }
        if self.need_ack && self.state == State::Connected {
            let seq = self.seq_nr;
            self.write_packet(PacketType::State, seq, (0, 0), now, out);
            return Some(false);
        }
        None
    }

    /// Sends a new packet with the next `len` unsent bytes.
    fn send_new(&mut self, ty: PacketType, len: usize, now: Micros, out: &mut Vec<u8>) {
        let seq = self.seq_nr;
        self.seq_nr = seq.wrapping_add(1);
        let start = self.send_base + self.unacked_bytes as u64;
        self.write_packet(ty, seq, (start, len), now, out);
        self.unacked_bytes += len;
        self.flight_bytes += len;
        self.inflight.push_back(Sent {
            seq,
            ty,
            start,
            len,
            sent_at: now,
            transmissions: 1,
            need_resend: false,
            sacked: false,
        });
        self.arm_timer(now);
    }

    fn arm_timer(&mut self, now: Micros) {
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.rto);
        }
    }

    /// When [`Connection::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Micros> {
        if !matches!(self.state, State::SynSent | State::Connected) {
            return None;
        }
        match (self.rto_deadline, self.ack_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Micros) {
        if self.ack_due.is_some_and(|due| due <= now) {
            self.ack_due = None;
            self.need_ack = true;
        }
        let Some(deadline) = self.rto_deadline else {
            return;
        };
        if now < deadline || !matches!(self.state, State::SynSent | State::Connected) {
            return;
        }
        if self.inflight.is_empty() {
            self.rto_deadline = None;
            return;
        }
        // Nothing unacknowledged but the probe, and it timed out: it was too big, as libtorrent
        // reads it; that is no sign of a dead peer.
        let probe = self.mtu.probe_seq();
        let mut unacked = self.inflight.iter().filter(|s| !s.sacked);
        let only_probe = match (unacked.next(), unacked.next()) {
            (Some(s), None) => Some(s.seq) == probe,
            _ => false,
        };
        if let (true, Some(seq)) = (only_probe, probe) {
            self.mtu.lost(seq);
        } else {
            self.timeouts += 1;
        }
        let limit = if self.state == State::SynSent {
            MAX_SYN_TIMEOUTS
        } else {
            MAX_TIMEOUTS
        };
        if self.timeouts > limit {
            self.state = State::TimedOut;
            return;
        }
        self.rto = (self.rto * 2).min(MAX_RTO);
        for i in 0..self.inflight.len() {
            self.mark_resend(i);
        }
        self.ledbat.on_timeout();
        self.rto_copy = true;
        self.recovery_until = self.seq_nr.wrapping_sub(1);
        self.rto_deadline = Some(now + self.rto);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            max_payload: 100,
            send_buffer: 1 << 16,
            recv_buffer: 1 << 16,
        }
    }

    /// What `c` sends at `now`, its due timers run first (a delayed ack), as a driver does.
    fn drain(c: &mut Connection, now: Micros) -> Vec<Vec<u8>> {
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
        std::iter::from_fn(|| c.poll_transmit(now)).collect()
    }

    fn seq(d: &[u8]) -> (PacketType, u16) {
        let p = Packet::parse(d).unwrap();
        (p.header.ty, p.header.seq_nr)
    }

    /// Runs A→B lossless until A has at least `n` data packets out in one batch; returns that
    /// batch and the time.
    fn grown(a: &mut Connection, b: &mut Connection, n: usize) -> (Vec<Vec<u8>>, Micros) {
        let mut now = 0;
        loop {
            now += 10_000;
            a.write(&[7u8; 4000]).unwrap();
            let batch = drain(a, now);
            if batch.len() >= n {
                return (batch, now);
            }
            now += 10_000;
            for d in batch {
                b.handle_datagram(&d, now).unwrap();
            }
            let mut sink = [0u8; 1 << 16];
            while b.read(&mut sink).is_ok() {}
            for d in drain(b, now) {
                a.handle_datagram(&d, now).unwrap();
            }
        }
    }

    fn pair() -> (Connection, Connection) {
        let mut a = Connection::connect(config(), 10, 0);
        let syn = drain(&mut a, 0);
        let mut b = Connection::accept(config(), &syn[0], 300, 0).unwrap();
        for d in drain(&mut b, 0) {
            a.handle_datagram(&d, 0).unwrap();
        }
        assert_eq!(a.state(), State::Connected);
        (a, b)
    }

    /// A hole followed by three or more delivered packets: the selective acks and duplicate acks
    /// retransmit the hole at once, before any timeout; and a later timeout resends only the
    /// hole, not what the receiver holds out of order.
    #[test]
    fn hole_retransmitted_fast_and_sacked_packets_kept() {
        let (mut a, mut b) = pair();
        let (batch, mut now) = grown(&mut a, &mut b, 6);
        let lost = seq(&batch[0]);
        assert_eq!(lost.0, PacketType::Data);
        let cwnd = a.cwnd();
        now += 10_000;
        let mut acks = Vec::new();
        for d in &batch[1..] {
            b.handle_datagram(d, now).unwrap();
            acks.extend(drain(&mut b, now));
        }
        assert!(Packet::parse(acks.last().unwrap()).unwrap().sack.is_some());
        for d in &acks {
            a.handle_datagram(d, now).unwrap();
        }
        let again = drain(&mut a, now);
        assert_eq!(seq(&again[0]), lost, "the hole first, without a timeout");
        assert!(a.cwnd() < cwnd, "a loss halves the window");
        // Nothing more arrives: at the timeout only the hole goes again, twice (two chances in a
        // round of one packet).
        let t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        let resent: Vec<_> = drain(&mut a, t).iter().map(|d| seq(d)).collect();
        assert_eq!(resent, vec![lost, lost]);
    }

    #[test]
    fn in_order_data_acked_every_ack_every_packets_or_after_the_delay_holes_at_once() {
        // One in-order packet: its ack waits for the delayed-ack timer.
        let (mut a, mut b) = pair();
        a.write(&[5u8; 1000]).unwrap();
        let burst = drain(&mut a, 10);
        assert_eq!(burst.len(), 2, "the initial window");
        b.handle_datagram(&burst[0], 20).unwrap();
        assert!(
            drain(&mut b, 20).is_empty(),
            "one in-order packet waits for more"
        );
        assert_eq!(b.poll_timeout(), Some(20 + DELAYED_ACK));
        assert_eq!(
            drain(&mut b, 20 + DELAYED_ACK).len(),
            1,
            "acked at the delay"
        );
        // A hole is answered at once, with its selective ack.
        b.handle_datagram(&burst[1], 30 + DELAYED_ACK).unwrap();
        let (mut a, mut b) = pair();
        a.write(&[5u8; 1000]).unwrap();
        let burst = drain(&mut a, 10);
        b.handle_datagram(&burst[1], 20).unwrap();
        let acks = drain(&mut b, 20);
        assert_eq!(acks.len(), 1);
        assert!(Packet::parse(&acks[0]).unwrap().sack.is_some());

        // ACK_EVERY in-order packets are acked without waiting: packets of a transfer from `a`
        // to `b`, replayed at one instant to `c`, a receiver in the same state as `b` was.
        let mut a = Connection::connect(config(), 10, 0);
        let syn = drain(&mut a, 0);
        let mut b = Connection::accept(config(), &syn[0], 300, 0).unwrap();
        let mut c = Connection::accept(config(), &syn[0], 300, 0).unwrap();
        for d in drain(&mut b, 0) {
            a.handle_datagram(&d, 0).unwrap();
        }
        drain(&mut c, 0);
        a.write(&[5u8; 20_000]).unwrap();
        let (mut data, mut now) = (Vec::new(), 0);
        while data.len() < ACK_EVERY as usize {
            now += DELAYED_ACK;
            let burst = drain(&mut a, now);
            for d in &burst {
                b.handle_datagram(d, now).unwrap();
            }
            data.extend(burst);
            for ack in drain(&mut b, now + DELAYED_ACK) {
                a.handle_datagram(&ack, now + DELAYED_ACK).unwrap();
            }
        }
        for (i, d) in data.iter().take(ACK_EVERY as usize).enumerate() {
            c.handle_datagram(d, now).unwrap();
            let acks = drain(&mut c, now).len();
            assert_eq!(
                acks,
                usize::from(i + 1 == ACK_EVERY as usize),
                "after {}",
                i + 1
            );
        }
    }

    #[test]
    fn write_bounded_by_send_buffer_and_reset_reported() {
        let (mut a, _b) = pair();
        assert_eq!(a.write(&[0u8; 100_000]).unwrap(), 1 << 16);
        assert_eq!(a.write(&[0u8; 10]).unwrap(), 0);
        let mut reset = Vec::new();
        Header {
            ty: PacketType::Reset,
            conn_id: a.recv_id(),
            timestamp: 0,
            timestamp_diff: 0,
            wnd_size: 0,
            seq_nr: 0,
            ack_nr: 0,
        }
        .write(None, b"", &mut reset);
        a.handle_datagram(&reset, 1).unwrap();
        assert_eq!(a.read(&mut [0u8; 4]), Err(UtpError::Reset));
        assert_eq!(a.write(b"x"), Err(UtpError::Reset));
    }

    /// The answer to a SYN is lost: the dialer's retransmitted SYN (after its timeout) gets a
    /// new one, and the connection opens.
    #[test]
    fn retransmitted_syn_answered_again() {
        let mut a = Connection::connect(config(), 10, 0);
        let syn = drain(&mut a, 0);
        let mut b = Connection::accept(config(), &syn[0], 300, 0).unwrap();
        assert_eq!(drain(&mut b, 0).len(), 1); // lost
        let t = a.poll_timeout().unwrap();
        assert_eq!(t, INITIAL_RTO);
        a.handle_timeout(t);
        let again = drain(&mut a, t);
        assert_eq!(seq(&again[0]), (PacketType::Syn, 1));
        b.handle_datagram(&again[0], t).unwrap();
        for d in drain(&mut b, t) {
            a.handle_datagram(&d, t).unwrap();
        }
        assert_eq!(a.state(), State::Connected);
        assert_eq!(
            a.rto(),
            2 * INITIAL_RTO,
            "backed off, and no RTT sample from a retransmission"
        );
    }

    /// A→B with the default (path MTU searching) config over a path that drops datagrams above
    /// `path` bytes with "don't fragment" set, silently, as a router does (and fragments those
    /// without). Returns A, B, the largest datagram A sent that was not a probe, and how many of
    /// those were over `path` (lost probes sent again).
    fn transfer_over_path(path: usize, bytes: usize) -> (Connection, Connection, usize, usize) {
        let mut a = Connection::connect(Config::default(), 10, 0);
        let syn = drain(&mut a, 0);
        let mut b = Connection::accept(Config::default(), &syn[0], 300, 0).unwrap();
        for d in drain(&mut b, 0) {
            a.handle_datagram(&d, 0).unwrap();
        }
        let data: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
        let (mut written, mut got, mut largest, mut fragmented) = (0, Vec::new(), 0, 0);
        let mut now = 0;
        while got.len() < bytes {
            now += 10_000;
            assert!(now < 600_000_000, "stalled at {} bytes", got.len());
            written += a.write(&data[written..]).unwrap();
            if a.poll_timeout().is_some_and(|t| t <= now) {
                a.handle_timeout(now);
            }
            while let Some(t) = a.poll_datagram(now) {
                if !t.probe {
                    largest = largest.max(t.data.len());
                    fragmented += usize::from(t.data.len() > path);
                }
                // Without "don't fragment", a big datagram passes in fragments.
                if t.data.len() <= path || !t.probe {
                    b.handle_datagram(&t.data, now + 5_000).unwrap();
                }
            }
            let mut sink = [0u8; 1 << 16];
            while let Ok(n) = b.read(&mut sink) {
                got.extend_from_slice(&sink[..n]);
            }
            // The receiver's delayed ack is due (a driver runs the timers it asks for).
            if b.poll_timeout().is_some_and(|t| t <= now + 5_000) {
                b.handle_timeout(now + 5_000);
            }
            for d in drain(&mut b, now + 5_000) {
                a.handle_datagram(&d, now + 10_000).unwrap();
            }
        }
        assert!(got == data);
        (a, b, largest, fragmented)
    }

    #[test]
    fn path_mtu_search_finds_the_path_and_ordinary_packets_stay_within_it() {
        let (a, _b, _, fragmented) = transfer_over_path(1200, 4 << 20);
        let m = a.path_mtu();
        assert!(
            m.floor() <= 1200 && 1200 - m.floor() < crate::mtu::SEARCH_DONE,
            "{m:?}"
        );
        assert!(m.ceiling() >= 1200, "{m:?}");
        assert!(
            fragmented <= 8,
            "only lost probes go again over the path's MTU: {fragmented}"
        );
        // An unlimited path: the search reaches the ceiling, 1472 bytes.
        let (a, _b, largest, _) = transfer_over_path(usize::MAX, 4 << 20);
        assert!(a.path_mtu().floor() > 1472 - crate::mtu::SEARCH_DONE);
        // Room is kept for a selective ack that the packets without one do not use.
        let floor = a.path_mtu().floor();
        assert!(
            largest >= floor - 2 - MAX_SACK_BYTES && largest <= 1472,
            "{largest}"
        );
    }

    /// A probe lost among delivered packets lowers the ceiling at its timeout, which does not count
    /// towards giving the connection up; a lost ordinary packet halves the window and leaves floor
    /// and ceiling alone.
    #[test]
    fn lost_probe_lowers_ceiling_not_cwnd_and_ordinary_loss_moves_no_mtu() {
        let mut a = Connection::connect(Config::default(), 10, 0);
        let syn = drain(&mut a, 0);
        let mut b = Connection::accept(Config::default(), &syn[0], 300, 0).unwrap();
        for d in drain(&mut b, 0) {
            a.handle_datagram(&d, 0).unwrap();
        }
        let mut now = 0;
        let mut lose_probe = true;
        let mut checked = 0;
        for _ in 0..2000 {
            now += 10_000;
            a.write(&[7u8; 1 << 16]).unwrap();
            let batch: Vec<Transmit> = std::iter::from_fn(|| a.poll_datagram(now)).collect();
            let probe = batch.iter().position(|t| t.probe);
            let (cwnd, before) = (a.cwnd(), a.path_mtu().clone());
            // Lose the first probe; once the search is done, the first packet of a batch.
            let lost = match probe {
                Some(i) if lose_probe => i,
                _ if !lose_probe && batch.len() > 4 => 0,
                _ => usize::MAX,
            };
            now += 5_000;
            for (i, t) in batch.iter().enumerate() {
                if i != lost {
                    b.handle_datagram(&t.data, now).unwrap();
                }
            }
            let mut sink = [0u8; 1 << 16];
            while b.read(&mut sink).is_ok() {}
            now += 5_000;
            for d in drain(&mut b, now) {
                a.handle_datagram(&d, now).unwrap();
            }
            if lost == usize::MAX {
                continue;
            }
            if lose_probe {
                // The others are selectively acked: at the timeout only the probe is missing.
                let t = a.poll_timeout().unwrap();
                a.handle_timeout(t);
                now = t;
                let after = a.path_mtu();
                assert_eq!(after.ceiling(), batch[lost].data.len() - 1);
                assert_eq!(after.floor(), before.floor());
                assert_eq!(a.timeouts, 0, "a lost probe is no sign of a dead peer");
                let again = a.poll_datagram(now).unwrap();
                assert_eq!(again.data[20..], batch[lost].data[20..], "the probe again");
                assert!(!again.probe, "without don't-fragment: it may be fragmented");
                b.handle_datagram(&again.data, now).unwrap();
                lose_probe = false;
            } else {
                let after = a.path_mtu();
                assert_eq!(after.floor(), before.floor());
                assert_eq!(after.ceiling(), before.ceiling());
                assert!(a.cwnd() < cwnd, "an ordinary loss halves the window");
                checked += 1;
                break;
            }
            checked += 1;
        }
        assert_eq!(checked, 2, "both losses were exercised");
    }

    /// The local stack refuses a probe as too big: the ceiling drops below it and the search
    /// goes on beneath.
    #[test]
    fn probe_refused_locally_lowers_the_ceiling() {
        let mut a = Connection::connect(Config::default(), 10, 0);
        let syn = drain(&mut a, 0);
        let mut b = Connection::accept(Config::default(), &syn[0], 300, 0).unwrap();
        for d in drain(&mut b, 0) {
            a.handle_datagram(&d, 0).unwrap();
        }
        let mut now = 0;
        loop {
            now += 10_000;
            assert!(now < 10_000_000, "no probe");
            a.write(&[1u8; 1 << 16]).unwrap();
            let batch: Vec<Transmit> = std::iter::from_fn(|| a.poll_datagram(now)).collect();
            if let Some(p) = batch.iter().find(|t| t.probe) {
                a.probe_too_big();
                assert_eq!(a.path_mtu().ceiling(), p.data.len() - 1);
                assert_eq!(a.path_mtu().probe_seq(), None);
                break;
            }
            for t in &batch {
                b.handle_datagram(&t.data, now + 5_000).unwrap();
            }
            let mut sink = [0u8; 1 << 16];
            while b.read(&mut sink).is_ok() {}
            for d in drain(&mut b, now + 5_000) {
                a.handle_datagram(&d, now + 10_000).unwrap();
            }
        }
    }

    #[test]
    fn rto_follows_rfc_6298() {
        let mut a = Connection::connect(config(), 1, 0);
        assert_eq!(a.rto(), INITIAL_RTO);
        a.rtt_sample(200_000);
        assert_eq!(a.rto(), 200_000 + 4 * 100_000);
        a.rtt_sample(200_000);
        // rttvar 3/4 · 100 ms, srtt unchanged.
        assert_eq!(a.rto(), 200_000 + 4 * 75_000);
        a.rtt_sample(1000);
        assert!(a.rto() >= MIN_RTO);
    }

    /// A stream of distinct bytes (a counter), so that a payload from the wrong offset shows.
    fn counting(from: usize, n: usize) -> Vec<u8> {
        (from..from + n).map(|i| (i % 251) as u8).collect()
    }

    /// Payloads live in the send buffer until acknowledged: a retransmission, long after the
    /// buffer's front moved on and its ring wrapped, carries the bytes the packet first carried.
    #[test]
    fn retransmission_carries_the_original_payload_after_the_buffer_moved() {
        let (mut a, mut b) = pair();
        let mut written = 0;
        let mut now = 0;
        let mut got = Vec::new();
        let mut sink = [0u8; 1 << 16];
        let mut checked = 0;
        for round in 0..200 {
            now += 10_000;
            let n = a.write(&counting(written, 3000)).unwrap();
            written += n;
            let batch = drain(&mut a, now);
            now += 10_000;
            // Every few rounds the first data packet of the batch is lost: the others are
            // acked past it, so its bytes stay while the buffer fills behind them.
            let lose = round % 7 == 3 && batch.len() > 4;
            let mut original = None;
            for (i, d) in batch.iter().enumerate() {
                if lose && i == 0 {
                    let p = Packet::parse(d).unwrap();
                    original = Some((p.header.seq_nr, p.payload.to_vec()));
                    continue;
                }
                b.handle_datagram(d, now).unwrap();
            }
            while let Ok(n) = b.read(&mut sink) {
                got.extend_from_slice(&sink[..n]);
            }
            for d in drain(&mut b, now) {
                a.handle_datagram(&d, now).unwrap();
            }
            if let Some((seq, payload)) = original {
                // Resent at once on the selective acks, or at the timeout.
                let mut again = drain(&mut a, now);
                if again.is_empty() {
                    now = a.poll_timeout().unwrap();
                    again = drain(&mut a, now);
                }
                let p = Packet::parse(&again[0]).unwrap();
                assert_eq!(p.header.seq_nr, seq);
                assert_eq!(p.payload, &payload[..], "the same bytes again");
                for d in &again {
                    b.handle_datagram(d, now).unwrap();
                }
                checked += 1;
            }
        }
        while let Ok(n) = b.read(&mut sink) {
            got.extend_from_slice(&sink[..n]);
        }
        assert!(checked >= 10, "losses exercised: {checked}");
        assert!(got.len() > 100_000, "{}", got.len());
        assert!(
            got == counting(0, got.len()),
            "the stream arrives whole and in order"
        );
    }

    /// `poll_transmit_into` appends the same datagram `poll_datagram` returns, after what the
    /// buffer held.
    #[test]
    fn transmit_into_appends_what_poll_datagram_gives() {
        let (mut a, _) = pair();
        let (mut c, _) = pair();
        a.write(&counting(0, 500)).unwrap();
        c.write(&counting(0, 500)).unwrap();
        let mut out = b"other".to_vec();
        let mut ends = Vec::new();
        while let Some(probe) = a.poll_transmit_into(7, &mut out) {
            let t = c.poll_datagram(7).unwrap();
            assert_eq!(probe, t.probe);
            assert_eq!(&out[out.len() - t.data.len()..], &t.data[..]);
            ends.push(out.len());
        }
        assert!(c.poll_datagram(7).is_none());
        assert_eq!(&out[..5], b"other");
        assert_eq!(ends.len(), 2, "the initial window");
    }

    /// Packets out of order wait aside and go in order once the hole fills; the FIN after them
    /// ends the stream only then.
    #[test]
    fn out_of_order_packets_delivered_in_order_with_the_fin() {
        let (mut a, mut b) = pair();
        let data = counting(0, 450);
        a.write(&data).unwrap();
        a.close();
        let mut sent = Vec::new();
        let mut now = 0;
        // A window of two packets at first: run until the data and the FIN have gone.
        while sent.len() < 6 {
            now += 1_000;
            sent.extend(drain(&mut a, now));
            // B hears nothing yet: A's window opens on acks made up for what it sent.
            let last = Packet::parse(sent.last().unwrap()).unwrap().header.seq_nr;
            let mut ack = Vec::new();
            Header {
                ty: PacketType::State,
                conn_id: a.recv_id(),
                timestamp: now as u32,
                timestamp_diff: 0,
                wnd_size: 1 << 16,
                seq_nr: 300,
                ack_nr: last,
            }
            .write(None, b"", &mut ack);
            a.handle_datagram(&ack, now).unwrap();
        }
        assert_eq!(seq(sent.last().unwrap()).0, PacketType::Fin);
        let mut sink = [0u8; 1000];
        // Everything but the first, backwards: nothing to read, no end of stream.
        for d in sent[1..].iter().rev() {
            b.handle_datagram(d, now).unwrap();
            assert_eq!(b.read(&mut sink), Err(UtpError::WouldBlock));
            assert!(!b.is_eof());
        }
        b.handle_datagram(&sent[0], now).unwrap();
        let n = b.read(&mut sink).unwrap();
        assert_eq!(&sink[..n], &data[..]);
        assert!(b.is_eof());
        assert_eq!(b.read(&mut sink), Ok(0));
        assert_eq!(b.reorder_bytes, 0);
    }
}
