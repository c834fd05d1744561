//! A PostgreSQL WAL position (LSN): what a replica has replayed and where the primary writes, as
//! one comparable number, so routing can ask "has this replica reached that write?".

use std::fmt;
use std::str::FromStr;

/// A WAL position: a byte offset into the cluster's write-ahead log. `Lsn(0)` is PostgreSQL's
/// `InvalidXLogRecPtr`, which no server reports as a position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// The WAL's page and segment sizes (PostgreSQL's `wal_block_size`, fixed when the server is
/// built, and `wal_segment_size`, chosen by `initdb`), which decide where page headers sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLayout {
    pub page_size: u64,
    pub segment_size: u64,
}

impl Default for WalLayout {
    /// PostgreSQL's defaults: 8 KiB pages, 16 MiB segments.
    fn default() -> Self {
        WalLayout {
            page_size: 8192,
            segment_size: 16 << 20,
        }
    }
}

/// Header of every WAL page but a segment's first (`SizeOfXLogShortPHD`).
const SHORT_PAGE_HEADER: u64 = 24;
/// Header of a segment's first page (`SizeOfXLogLongPHD`).
const LONG_PAGE_HEADER: u64 = 40;

impl Lsn {
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The position as the end of the record before it, which is how a replica reports it.
    ///
    /// PostgreSQL turns its internal byte count into an LSN two ways. The insert position
    /// (`pg_current_wal_insert_lsn()`, `XLogBytePosToRecPtr`) is where the next record will
    /// start, so on a page boundary it points past the page header. The end of a record (what
    /// `pg_last_wal_replay_lsn()` reports, `XLogBytePosToEndRecPtr`) stops at the boundary.
    /// Without this, a replica that has replayed everything would stay one page header "behind"
    /// an idle primary whose last record ended on a page boundary. No record can end inside a
    /// header, so a position right after one is always such an insert position.
    pub fn record_end(self, layout: WalLayout) -> Lsn {
        let v = self.0;
        if layout.segment_size > 0 && v % layout.segment_size == LONG_PAGE_HEADER {
            Lsn(v - LONG_PAGE_HEADER)
        } else if layout.page_size > 0 && v % layout.page_size == SHORT_PAGE_HEADER {
            Lsn(v - SHORT_PAGE_HEADER)
        } else {
            self
        }
    }

    /// Bytes from `earlier` to here (0 when `earlier` is not behind).
    pub fn bytes_after(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Why a text is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a WAL position (expected two hex numbers of up to 8 digits, like 16/B374D848)"
)]
pub struct LsnParseError(String);

impl FromStr for Lsn {
    type Err = LsnParseError;

    /// Parses an LSN as PostgreSQL prints it (`16/B374D848`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || LsnParseError(text.to_owned());
        let (hi, lo) = text.split_once('/').ok_or_else(error)?;
        // `from_str_radix` would also take a sign; PostgreSQL takes 1..=8 hex digits per half.
        let half = |s: &str| {
            if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(s, 16).ok()
        };
        let (hi, lo) = (half(hi).ok_or_else(error)?, half(lo).ok_or_else(error)?);
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_as_postgresql_does() {
        let lsn: Lsn = "16/B374D848".parse().expect("valid");
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!("0/0".parse(), Ok(Lsn(0)));
        assert_eq!(
            "FFFFFFFF/FFFFFFFF".parse::<Lsn>().map(Lsn::as_u64),
            Ok(u64::MAX)
        );
        assert_eq!("a/1b".parse(), Ok(Lsn(0xA_0000_001B)));
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "16B374D848",
            "1/2/3",
            "+1/2",
            "1/-2",
            "g/1",
            "1/123456789",
            " 1/2",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn display_round_trips() {
        for v in [1, 0xFFFF_FFFF, 0x1_0000_0000, 0x16_B374_D848, u64::MAX] {
            assert_eq!(Lsn(v).to_string().parse(), Ok(Lsn(v)));
        }
    }

    #[test]
    fn a_position_after_a_page_header_is_the_end_of_the_record_before() {
        let layout = WalLayout::default();
        let end = |v| Lsn(v).record_end(layout).0;
        // After a short page header: the page boundary.
        assert_eq!(end(8192 + 24), 8192);
        assert_eq!(end(5 * 8192 + 24), 5 * 8192);
        // After a segment's long header.
        assert_eq!(end((16 << 20) + 40), 16 << 20);
        assert_eq!(
            end((3 << 32) + (16 << 20) * 7 + 40),
            (3 << 32) + (16 << 20) * 7
        );
        // Anywhere else: unchanged (40 into an ordinary page is a record end).
        for v in [0, 8192, 8192 + 40, 8192 + 23, 8192 + 25, (16 << 20) + 48] {
            assert_eq!(end(v), v, "{v}");
        }
        // 1 MiB segments (`initdb --wal-segsize=1`): the long header sits every MiB.
        let small = WalLayout {
            segment_size: 1 << 20,
            ..layout
        };
        assert_eq!(Lsn((5 << 20) + 40).record_end(small), Lsn(5 << 20));
        assert_eq!(Lsn((5 << 20) + 40).record_end(layout), Lsn((5 << 20) + 40));
    }

    #[test]
    fn bytes_after_is_zero_when_reached() {
        assert_eq!(Lsn(100).bytes_after(Lsn(40)), 60);
        assert_eq!(Lsn(40).bytes_after(Lsn(100)), 0);
    }
}
