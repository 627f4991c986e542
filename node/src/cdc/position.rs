//! The last delivered commit position, kept in `REALTIME_DATA_DIR` so a restart neither loses nor
//! repeats changes: the hub records each transaction's end LSN right after handing it to the sockets,
//! and after a restart the consumer skips every transaction at or below it.
//!
//! The record is a fixed-width decimal rewritten in place, so an update is one small `pwrite` (it
//! survives a killed process through the page cache; it is not fsynced per transaction).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::CdcError;

/// Width of the record: any u64 in decimal, zero-padded, plus a newline.
const RECORD: usize = 21;

pub struct DeliveredPosition {
    path: PathBuf,
    file: File,
    lsn: u64,
    /// The file existed at start-up: this is a restart.
    resumed: bool,
}

impl DeliveredPosition {
    pub fn open(data_dir: &Path, slot: &str) -> Result<DeliveredPosition, CdcError> {
        let path = data_dir.join(format!("cdc-{slot}.lsn"));
        let state = |source| CdcError::State { path: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(state)?;
        let resumed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(state)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(state)?;
        let lsn = text.trim().parse().unwrap_or(0);
        Ok(DeliveredPosition { path, file, lsn, resumed })
    }

    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// Whether a position was recorded by an earlier run.
    pub fn resumed(&self) -> bool {
        self.resumed && self.lsn > 0
    }

    /// Forgets the recorded position (it cannot be real: see [`super::start`]); the node then delivers
    /// whatever the stream brings.
    pub fn discard(&mut self) -> Result<(), CdcError> {
        self.file
            .write_all_at(format!("{:020}\n", 0).as_bytes(), 0)
            .map_err(|source| CdcError::State { path: self.path.clone(), source })?;
        self.lsn = 0;
        self.resumed = false;
        Ok(())
    }

    /// Records `lsn` if it is past the recorded one.
    pub fn store(&mut self, lsn: u64) -> Result<(), CdcError> {
        if lsn <= self.lsn {
            return Ok(());
        }
        let record = format!("{lsn:020}\n");
        debug_assert_eq!(record.len(), RECORD);
        self.file
            .write_all_at(record.as_bytes(), 0)
            .map_err(|source| CdcError::State { path: self.path.clone(), source })?;
        self.lsn = lsn;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_only_moves_forward() {
        let dir = std::env::temp_dir().join(format!("realtime-position-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut p = DeliveredPosition::open(&dir, "s").unwrap();
        assert!(!p.resumed());
        p.store(42).unwrap();
        p.store(7).unwrap();
        let mut again = DeliveredPosition::open(&dir, "s").unwrap();
        assert_eq!(again.lsn(), 42);
        assert!(again.resumed());
        again.discard().unwrap();
        let discarded = DeliveredPosition::open(&dir, "s").unwrap();
        assert_eq!(discarded.lsn(), 0);
        assert!(!discarded.resumed());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
