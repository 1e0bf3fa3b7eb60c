//! Who may announce what: open, allow-list, deny-list, or private (per-user passkeys), plus per-user
//! transfer totals for private trackers, kept in redb so they survive restarts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;
use tracker_proto::{Event, InfoHash, PeerId};

use crate::Error;

const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
const TOTALS: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("totals");

/// Longest passkey accepted in a URL.
const MAX_PASSKEY: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Any info-hash.
    #[default]
    Open,
    /// Only info-hashes in the list file.
    Allow,
    /// Any info-hash except those in the list file.
    Deny,
    /// Only known passkeys (and, if a list file is given, only listed info-hashes).
    Private,
}

/// Why an announce was refused; the text goes to the client as the failure reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownPasskey,
    NotAllowed,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownPasskey => "unknown passkey",
            Refusal::NotAllowed => "torrent not registered with this tracker",
        }
    }
}

/// The running totals a private peer last reported, and when (seconds since `Access::epoch`).
#[derive(Debug, Clone, Copy)]
struct Report {
    uploaded: u64,
    downloaded: u64,
    seen: u32,
}

/// Totals not yet saved: (passkey, info-hash) and (uploaded, downloaded).
pub type PendingTotals = Vec<((String, InfoHash), (u64, u64))>;

/// One passkey's remembered peers.
type PasskeyPeers = HashMap<(InfoHash, PeerId), Report>;

/// Most peers (info-hash and peer_id pairs) remembered for one passkey. Past it, a new peer of that
/// passkey is credited nothing until one of its others stops or expires.
pub const MAX_REPORTS_PER_PASSKEY: usize = 10_000;

pub struct Access {
    mode: Mode,
    list_path: Option<PathBuf>,
    db_path: Option<PathBuf>,
    list: RwLock<HashSet<InfoHash>>,
    users: RwLock<HashSet<String>>,
    /// Last uploaded/downloaded each private peer reported, by passkey then (info-hash, peer_id), to
    /// turn running totals into deltas. Entries leave on `stopped` or after `peer_timeout` of silence.
    last_report: Mutex<HashMap<String, PasskeyPeers>>,
    epoch: std::time::Instant,
    /// Deltas not yet written to the database, by (passkey, info-hash).
    pending: Mutex<HashMap<(String, InfoHash), (u64, u64)>>,
}

fn parse_hex20(line: &str) -> Option<InfoHash> {
    InfoHash::from_hex(line.trim())
}

/// Reads a list file: one hex info-hash per line; blank lines and `#` comments ignored.
pub fn read_list(path: &Path) -> Result<HashSet<InfoHash>, Error> {
    let text = std::fs::read_to_string(path)?;
    let mut set = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let hash = parse_hex20(line).ok_or_else(|| Error::List {
            path: path.to_path_buf(),
            line: n + 1,
        })?;
        set.insert(hash);
    }
    Ok(set)
}

/// Opens the users database, creating it readable by its owner only: it holds every passkey, and a
/// passkey is a user's whole credential. An existing file that others can read is narrowed to 0600, with
/// a warning (the passkeys in it may already have been read).
fn open_db(path: &Path) -> Result<Database, Error> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let cannot = |e: &dyn std::fmt::Display| Error::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    // An empty file is what redb initialises a new database in.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)
                .map_err(|e| cannot(&e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} was readable by other users (mode {:o}); its passkeys may have leaked. \
                     Narrowing it to 0600",
                    path.display(),
                    mode & 0o777
                );
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| cannot(&e))?;
            }
        }
        Err(e) => return Err(cannot(&e)),
    }
    Database::create(path).map_err(|e| cannot(&e))
}

fn load_users(path: &Path) -> Result<HashSet<String>, Error> {
    let db = open_db(path)?;
    let txn = db.begin_read()?;
    let table = match txn.open_table(USERS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashSet::new()),
        Err(e) => return Err(e.into()),
    };
    let mut users = HashSet::new();
    for row in table.iter()? {
        let (passkey, _) = row?;
        users.insert(passkey.value().to_string());
    }
    Ok(users)
}

impl Access {
    pub fn new(
        mode: Mode,
        list_path: Option<PathBuf>,
        db_path: Option<PathBuf>,
    ) -> Result<Access, Error> {
        Self::with_users_from(mode, list_path, db_path, false)
    }

    /// With `shared_users`, the users come from a cluster (`set_users`) and the totals go to it
    /// (`take_pending`), so no database is needed; nor a list file (`set_list`).
    pub fn with_users_from(
        mode: Mode,
        list_path: Option<PathBuf>,
        db_path: Option<PathBuf>,
        shared_users: bool,
    ) -> Result<Access, Error> {
        // On a cluster the list may come from another node.
        if matches!(mode, Mode::Allow | Mode::Deny) && list_path.is_none() && !shared_users {
            return Err(Error::Config(format!("mode {mode:?} needs a list file")));
        }
        if mode == Mode::Private && db_path.is_none() && !shared_users {
            return Err(Error::Config(
                "private mode needs a database file (db) or a cluster".into(),
            ));
        }
        let access = Access {
            mode,
            list_path,
            db_path,
            list: RwLock::new(HashSet::new()),
            users: RwLock::new(HashSet::new()),
            last_report: Mutex::new(HashMap::new()),
            epoch: std::time::Instant::now(),
            pending: Mutex::new(HashMap::new()),
        };
        access.reload()?;
        Ok(access)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Re-reads the list file and the user table (on SIGHUP and periodically).
    pub fn reload(&self) -> Result<(), Error> {
        if let Some(path) = &self.list_path {
            *self.list.write() = read_list(path)?;
        }
        if self.mode == Mode::Private {
            if let Some(path) = &self.db_path {
                *self.users.write() = load_users(path)?;
            }
        }
        Ok(())
    }

    /// Replaces the info-hash list (from the cluster).
    pub fn set_list(&self, list: HashSet<InfoHash>) {
        *self.list.write() = list;
    }

    /// The info-hash list, if this node reads one from a file (to publish to the cluster).
    pub fn file_list(&self) -> Option<Vec<InfoHash>> {
        self.list_path.as_ref()?;
        Some(self.list.read().iter().copied().collect())
    }

    /// Replaces the known passkeys (from the cluster).
    pub fn set_users(&self, users: HashSet<String>) {
        *self.users.write() = users;
    }

    /// Takes the totals not yet saved, by (passkey, info-hash): uploaded, downloaded.
    pub fn take_pending(&self) -> PendingTotals {
        self.pending.lock().drain().collect()
    }

    /// Puts back totals that could not be saved.
    pub fn restore_pending(&self, pending: PendingTotals) {
        let mut back = self.pending.lock();
        for (k, (up, down)) in pending {
            let e = back.entry(k).or_default();
            e.0 += up;
            e.1 += down;
        }
    }

    /// Decides whether `hash` may be announced with `passkey`.
    pub fn check(&self, hash: &InfoHash, passkey: Option<&[u8]>) -> Result<(), Refusal> {
        match self.mode {
            Mode::Open => Ok(()),
            Mode::Allow => self.listed(hash),
            Mode::Deny => {
                if self.list.read().contains(hash) {
                    Err(Refusal::NotAllowed)
                } else {
                    Ok(())
                }
            }
            Mode::Private => {
                let key = passkey
                    .filter(|k| k.len() <= MAX_PASSKEY)
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .ok_or(Refusal::UnknownPasskey)?;
                if !self.users.read().contains(key) {
                    return Err(Refusal::UnknownPasskey);
                }
                if self.list_path.is_some() {
                    self.listed(hash)?;
                }
                Ok(())
            }
        }
    }

    fn listed(&self, hash: &InfoHash) -> Result<(), Refusal> {
        if self.list.read().contains(hash) {
            Ok(())
        } else {
            Err(Refusal::NotAllowed)
        }
    }

    fn now(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    /// Accounts a private announce's transfer since the peer's previous report.
    ///
    /// Only deltas between two reports of the same peer (passkey, info-hash, peer_id) are credited. The
    /// first report of a peer the tracker does not remember is a baseline and credits nothing, whatever
    /// its event: under BEP 3 a client's totals start at 0 with `started`, so an honest client loses
    /// nothing, while one that changes its peer_id (or says `started` again) to be credited its whole
    /// `uploaded` a second time gains nothing. Totals that went down (a client restarted its counters) are
    /// a new baseline too.
    pub fn account(
        &self,
        passkey: &[u8],
        hash: &InfoHash,
        peer_id: &PeerId,
        uploaded: u64,
        downloaded: u64,
        event: Event,
    ) {
        if self.mode != Mode::Private {
            return;
        }
        let passkey = String::from_utf8_lossy(passkey).into_owned();
        let now = self.now();
        let (up, down) = {
            let mut last = self.last_report.lock();
            let peers = last.entry(passkey.clone()).or_default();
            let key = (*hash, *peer_id);
            let credit = match peers.get(&key) {
                Some(prev) if event != Event::Started => (
                    uploaded.saturating_sub(prev.uploaded),
                    downloaded.saturating_sub(prev.downloaded),
                ),
                _ => (0, 0),
            };
            if event == Event::Stopped {
                peers.remove(&key);
            } else if peers.len() < MAX_REPORTS_PER_PASSKEY || peers.contains_key(&key) {
                peers.insert(
                    key,
                    Report {
                        uploaded,
                        downloaded,
                        seen: now,
                    },
                );
            }
            if peers.is_empty() {
                last.remove(&passkey);
            }
            credit
        };
        if up > 0 || down > 0 {
            let mut pending = self.pending.lock();
            let entry = pending.entry((passkey, *hash)).or_default();
            entry.0 += up;
            entry.1 += down;
        }
    }

    /// Forgets private peers silent for `timeout_secs` (the tracker drops them from their swarm at the
    /// same age); returns how many.
    pub fn expire(&self, timeout_secs: u32) -> usize {
        let cutoff = self.now().saturating_sub(timeout_secs);
        let mut removed = 0;
        self.last_report.lock().retain(|_, peers| {
            let before = peers.len();
            peers.retain(|_, r| r.seen >= cutoff);
            removed += before - peers.len();
            !peers.is_empty()
        });
        removed
    }

    /// Private peers remembered for delta crediting.
    pub fn tracked_peers(&self) -> usize {
        self.last_report.lock().values().map(HashMap::len).sum()
    }

    /// Writes pending totals to the database. The database is opened only for the write, so admin
    /// commands can use it in between; if it is busy the totals stay pending for the next flush.
    pub fn flush(&self) -> Result<(), Error> {
        let Some(path) = &self.db_path else {
            return Ok(());
        };
        let pending: Vec<_> = self.pending.lock().drain().collect();
        if pending.is_empty() {
            return Ok(());
        }
        let result = (|| -> Result<(), Error> {
            let db = open_db(path)?;
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(TOTALS)?;
                for ((passkey, hash), (up, down)) in &pending {
                    let mut key = passkey.as_bytes().to_vec();
                    key.extend_from_slice(&hash[..]);
                    let (old_up, old_down) = table
                        .get(key.as_slice())?
                        .map(|v| v.value())
                        .unwrap_or((0, 0));
                    table.insert(key.as_slice(), (old_up + up, old_down + down))?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        if result.is_err() {
            self.restore_pending(pending);
        }
        result
    }
}

/// A user of a private tracker, with transfer totals over all torrents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTotals {
    pub name: String,
    pub passkey: String,
    pub uploaded: u64,
    pub downloaded: u64,
}

pub(crate) fn random_hex(bytes: usize) -> Result<String, Error> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Adds a user and returns the new passkey.
pub fn add_user(db: &Path, name: &str) -> Result<String, Error> {
    let passkey = random_hex(16)?;
    let db = open_db(db)?;
    let txn = db.begin_write()?;
    {
        let mut users = txn.open_table(USERS)?;
        for row in users.iter()? {
            let (_, existing) = row?;
            if existing.value() == name {
                return Err(Error::UserExists(name.to_string()));
            }
        }
        users.insert(passkey.as_str(), name)?;
    }
    txn.commit()?;
    Ok(passkey)
}

/// Revokes a user by name or passkey; returns whether one was found.
pub fn revoke_user(db: &Path, who: &str) -> Result<bool, Error> {
    let db = open_db(db)?;
    let txn = db.begin_write()?;
    let found = {
        let mut users = txn.open_table(USERS)?;
        let mut key = None;
        for row in users.iter()? {
            let (passkey, name) = row?;
            if passkey.value() == who || name.value() == who {
                key = Some(passkey.value().to_string());
            }
        }
        match key {
            Some(k) => {
                users.remove(k.as_str())?;
                true
            }
            None => false,
        }
    };
    txn.commit()?;
    Ok(found)
}

/// Every user with totals summed over torrents.
pub fn list_users(db: &Path) -> Result<Vec<UserTotals>, Error> {
    let db = open_db(db)?;
    let txn = db.begin_read()?;
    let mut out = Vec::new();
    let users = match txn.open_table(USERS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    let mut sums: HashMap<String, (u64, u64)> = HashMap::new();
    match txn.open_table(TOTALS) {
        Ok(totals) => {
            for row in totals.iter()? {
                let (key, value) = row?;
                let key = key.value();
                if key.len() > 20 {
                    let passkey = String::from_utf8_lossy(&key[..key.len() - 20]).into_owned();
                    let (up, down) = value.value();
                    let e = sums.entry(passkey).or_default();
                    e.0 += up;
                    e.1 += down;
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    for row in users.iter()? {
        let (passkey, name) = row?;
        let (uploaded, downloaded) = sums.get(passkey.value()).copied().unwrap_or((0, 0));
        out.push(UserTotals {
            name: name.value().to_string(),
            passkey: passkey.value().to_string(),
            uploaded,
            downloaded,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_decide() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list");
        std::fs::write(&list, format!("# allowed\n{}\n\n", "ab".repeat(20))).unwrap();
        let allow = Access::new(Mode::Allow, Some(list.clone()), None).unwrap();
        assert_eq!(allow.check(&[0xab; 20].into(), None), Ok(()));
        assert_eq!(allow.check(&[0; 20].into(), None), Err(Refusal::NotAllowed));
        let deny = Access::new(Mode::Deny, Some(list.clone()), None).unwrap();
        assert_eq!(
            deny.check(&[0xab; 20].into(), None),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(deny.check(&[0; 20].into(), None), Ok(()));
        // Reload picks up a changed list.
        std::fs::write(&list, "00".repeat(20)).unwrap();
        allow.reload().unwrap();
        assert_eq!(allow.check(&[0; 20].into(), None), Ok(()));
        std::fs::write(&list, "nonsense").unwrap();
        assert!(allow.reload().is_err());
    }

    #[test]
    fn private_passkeys_and_totals_persist() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.redb");
        let alice = add_user(&db, "alice").unwrap();
        assert_eq!(alice.len(), 32);
        assert!(add_user(&db, "alice").is_err());
        let access = Access::new(Mode::Private, None, Some(db.clone())).unwrap();
        assert_eq!(
            access.check(&[1; 20].into(), Some(alice.as_bytes())),
            Ok(())
        );
        assert_eq!(
            access.check(&[1; 20].into(), Some(b"0000")),
            Err(Refusal::UnknownPasskey)
        );
        assert_eq!(
            access.check(&[1; 20].into(), None),
            Err(Refusal::UnknownPasskey)
        );

        access.account(
            alice.as_bytes(),
            &[1; 20].into(),
            &[7; 20].into(),
            0,
            0,
            Event::Started,
        );
        access.account(
            alice.as_bytes(),
            &[1; 20].into(),
            &[7; 20].into(),
            250,
            10,
            Event::None,
        );
        access.flush().unwrap();
        let users = list_users(&db).unwrap();
        assert_eq!(users[0].uploaded, 250);
        assert_eq!(users[0].downloaded, 10);

        assert!(revoke_user(&db, "alice").unwrap());
        access.reload().unwrap();
        assert_eq!(
            access.check(&[1; 20].into(), Some(alice.as_bytes())),
            Err(Refusal::UnknownPasskey)
        );
        assert!(!revoke_user(&db, "alice").unwrap());
    }

    #[test]
    fn private_credits_deltas_only_and_forgets_silent_peers() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.redb");
        let bob = add_user(&db, "bob").unwrap();
        let access = Access::new(Mode::Private, None, Some(db.clone())).unwrap();
        let key = bob.as_bytes();
        // The first report is a baseline; a new peer_id or a second `started` earns nothing.
        access.account(
            key,
            &[1; 20].into(),
            &[1; 20].into(),
            1000,
            0,
            Event::Started,
        );
        access.account(key, &[1; 20].into(), &[1; 20].into(), 1500, 0, Event::None);
        access.account(key, &[1; 20].into(), &[2; 20].into(), 1500, 0, Event::None);
        access.account(
            key,
            &[1; 20].into(),
            &[2; 20].into(),
            1500,
            0,
            Event::Started,
        );
        access.account(
            key,
            &[1; 20].into(),
            &[1; 20].into(),
            1700,
            0,
            Event::Started,
        );
        access.flush().unwrap();
        assert_eq!(list_users(&db).unwrap()[0].uploaded, 500);
        assert_eq!(access.tracked_peers(), 2);
        assert_eq!(access.expire(3600), 0);
        assert_eq!(access.expire(0) + access.tracked_peers(), 2);
        // A passkey's table is bounded.
        for i in 0..MAX_REPORTS_PER_PASSKEY as u32 + 10 {
            let mut hash = [0u8; 20];
            hash[..4].copy_from_slice(&i.to_be_bytes());
            access.account(key, &hash.into(), &[3; 20].into(), 0, 0, Event::Started);
        }
        assert!(access.tracked_peers() <= MAX_REPORTS_PER_PASSKEY);
    }

    #[test]
    fn database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.redb");
        add_user(&db, "carol").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        list_users(&db).unwrap();
        assert_eq!(
            mode(&db),
            0o600,
            "an existing readable database is narrowed"
        );
    }
}
