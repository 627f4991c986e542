//! The daily partitions of `realtime.messages`, as pure date arithmetic: which days the janitor keeps
//! created ahead, which ones have expired, and the names they go by (`messages_YYYY_MM_DD`, the
//! names Supabase uses, so a Supabase database's partitions are recognised and aged the same way).
//!
//! Days are UTC calendar days, counted from 1970-01-01: the partition bounds are `timestamp without
//! time zone` values and Supabase databases run in UTC. No date crate is needed for this much.

use std::fmt;
use std::time::Duration;

/// Days before today that get a partition: a session whose time zone is behind UTC stamps rows with
/// yesterday's date for part of the day.
pub const DAYS_BEHIND: i64 = 1;
/// Days after today that get a partition, so inserts keep working while no janitor runs (e.g. every
/// node down over a weekend).
pub const DAYS_AHEAD: i64 = 3;

const SECONDS_PER_DAY: i64 = 86_400;

/// A UTC calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

impl Day {
    /// The day `unix_seconds` falls on.
    pub fn from_unix_seconds(unix_seconds: i64) -> Day {
        Day(unix_seconds.div_euclid(SECONDS_PER_DAY))
    }

    /// `None` unless `year-month-day` is a real date.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Day> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        // Howard Hinnant's days_from_civil: years start in March so the leap day comes last.
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let year_of_era = y - era * 400;
        let m = i64::from(month);
        let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        Some(Day(era * 146_097 + day_of_era - 719_468))
    }

    /// `(year, month, day)`.
    pub fn ymd(self) -> (i64, u32, u32) {
        // Howard Hinnant's civil_from_days, the inverse of `from_ymd`.
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z - era * 146_097;
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let mp = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
        let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }

    /// `n` days later (earlier when negative).
    pub fn add_days(self, n: i64) -> Day {
        Day(self.0 + n)
    }

    /// Midnight UTC at the start of this day.
    pub fn start_unix_seconds(self) -> i64 {
        self.0 * SECONDS_PER_DAY
    }

    /// `realtime.messages_YYYY_MM_DD`'s unqualified name.
    pub fn partition_name(self) -> String {
        let (y, m, d) = self.ymd();
        format!("messages_{y:04}_{m:02}_{d:02}")
    }

    /// The day a partition named `messages_YYYY_MM_DD` holds; `None` for any other name (the default
    /// partition, a partition someone named differently), which the janitor then never drops.
    pub fn from_partition_name(name: &str) -> Option<Day> {
        let date = name.strip_prefix("messages_")?;
        let bytes = date.as_bytes();
        let shape_ok = bytes.len() == 10
            && bytes
                .iter()
                .enumerate()
                .all(|(i, b)| if i == 4 || i == 7 { *b == b'_' } else { b.is_ascii_digit() });
        if !shape_ok {
            return None;
        }
        let year = date[0..4].parse().ok()?;
        let month = date[5..7].parse().ok()?;
        let day = date[8..10].parse().ok()?;
        Day::from_ymd(year, month, day)
    }

    /// The statement that creates this day's partition (a no-op when it exists).
    pub fn create_sql(self) -> String {
        format!(
            "create table if not exists realtime.{} partition of realtime.messages \
             for values from ('{self}') to ('{}')",
            self.partition_name(),
            self.add_days(1)
        )
    }

    /// Whether every row this day's partition can hold is older than `now - retention`.
    pub fn expired(self, now_unix_seconds: i64, retention: Duration) -> bool {
        let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        self.add_days(1).start_unix_seconds() <= now_unix_seconds.saturating_sub(retention)
    }
}

impl fmt::Display for Day {
    /// `YYYY-MM-DD`, as PostgreSQL reads a timestamp.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// What one janitor pass does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Days from yesterday to [`DAYS_AHEAD`] days ahead that have no partition and have not expired.
    pub create: Vec<Day>,
    /// Existing partitions (unqualified names) whose whole day is older than the retention.
    pub drop: Vec<String>,
}

/// Plans a pass at `now` over the partitions named in `existing`.
pub fn plan(now_unix_seconds: i64, retention: Duration, existing: &[String]) -> Plan {
    let present: Vec<Day> = existing.iter().filter_map(|name| Day::from_partition_name(name)).collect();
    let today = Day::from_unix_seconds(now_unix_seconds);
    let create = (-DAYS_BEHIND..=DAYS_AHEAD)
        .map(|offset| today.add_days(offset))
        .filter(|day| !present.contains(day) && !day.expired(now_unix_seconds, retention))
        .collect();
    let mut drop: Vec<String> = existing
        .iter()
        .filter(|name| {
            Day::from_partition_name(name).is_some_and(|day| day.expired(now_unix_seconds, retention))
        })
        .cloned()
        .collect();
    drop.sort();
    Plan { create, drop }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn day(y: i64, m: u32, d: u32) -> Day {
        Day::from_ymd(y, m, d).expect("valid date")
    }

    #[test]
    fn days_round_trip_through_the_calendar() {
        assert_eq!(day(1970, 1, 1), Day(0));
        assert_eq!(day(2000, 3, 1).add_days(-1).ymd(), (2000, 2, 29));
        assert_eq!(day(1900, 3, 1).add_days(-1).ymd(), (1900, 2, 28));
        assert_eq!(day(2024, 12, 31).add_days(1).ymd(), (2025, 1, 1));
        assert_eq!(day(1969, 12, 31), Day(-1));
        // Every day over four centuries and a bit converts both ways.
        let start = day(1899, 1, 1);
        for n in 0..(146_097 + 800) {
            let d = start.add_days(n);
            let (y, m, dd) = d.ymd();
            assert_eq!(Day::from_ymd(y, m, dd), Some(d), "{y}-{m}-{dd}");
        }
        assert_eq!(Day::from_ymd(2023, 2, 29), None);
        assert_eq!(Day::from_ymd(2024, 13, 1), None);
        assert_eq!(Day::from_ymd(2024, 4, 31), None);
        assert_eq!(Day::from_ymd(2024, 1, 0), None);
    }

    #[test]
    fn unix_seconds_fall_on_utc_days() {
        // 2025-03-09T23:59:59Z and 2025-03-10T00:00:00Z.
        assert_eq!(Day::from_unix_seconds(1_741_564_799).ymd(), (2025, 3, 9));
        assert_eq!(Day::from_unix_seconds(1_741_564_800).ymd(), (2025, 3, 10));
        assert_eq!(day(2025, 3, 10).start_unix_seconds(), 1_741_564_800);
        assert_eq!(Day::from_unix_seconds(-1).ymd(), (1969, 12, 31));
    }

    #[test]
    fn partition_names_are_supabases() {
        assert_eq!(day(2025, 3, 9).partition_name(), "messages_2025_03_09");
        assert_eq!(day(2025, 3, 9).to_string(), "2025-03-09");
        assert_eq!(Day::from_partition_name("messages_2025_03_09"), Some(day(2025, 3, 9)));
        for other in [
            "messages_default",
            "messages",
            "messages_2025_3_09",
            "messages_2025-03-09",
            "messages_2025_02_30",
            "messages_2025_03_09_old",
            "xmessages_2025_03_09",
            "messages_+025_03_09",
        ] {
            assert_eq!(Day::from_partition_name(other), None, "{other}");
        }
        assert_eq!(
            day(2024, 2, 29).create_sql(),
            "create table if not exists realtime.messages_2024_02_29 partition of realtime.messages \
             for values from ('2024-02-29') to ('2024-03-01')"
        );
    }

    #[test]
    fn a_day_expires_once_its_last_row_is_older_than_the_retention() {
        let retention = Duration::from_secs(72 * 3600);
        let d = day(2025, 3, 9);
        let end = day(2025, 3, 10).start_unix_seconds();
        assert!(!d.expired(end + 72 * HOUR - 1, retention));
        assert!(d.expired(end + 72 * HOUR, retention));
        assert!(!d.expired(end, Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn plans_today_and_the_next_days_and_drops_only_expired_days_named_like_ours() {
        let now = day(2025, 3, 10).start_unix_seconds() + 10 * HOUR;
        let retention = Duration::from_secs(72 * 3600);
        let existing: Vec<String> = [
            "messages_2025_03_05", // ended 03-06 00:00, more than 72 h before 03-10 10:00
            "messages_2025_03_06", // ended 03-07 00:00: 82 h ago
            "messages_2025_03_07", // ended 03-08 00:00: 58 h ago
            "messages_2025_03_10",
            "messages_default",
            "messages_archive_2020",
        ]
        .map(String::from)
        .to_vec();
        let p = plan(now, retention, &existing);
        assert_eq!(p.drop, ["messages_2025_03_05", "messages_2025_03_06"]);
        let create: Vec<String> = p.create.iter().map(|d| d.partition_name()).collect();
        assert_eq!(
            create,
            ["messages_2025_03_09", "messages_2025_03_11", "messages_2025_03_12", "messages_2025_03_13"]
        );
        // Nothing to do once it is all there.
        let all: Vec<String> = (-1..=3)
            .map(|n| day(2025, 3, 10).add_days(n).partition_name())
            .chain(existing[2..].iter().cloned())
            .collect();
        assert_eq!(plan(now, retention, &all), Plan::default());
    }

    #[test]
    fn a_short_retention_never_recreates_what_it_drops() {
        let now = day(2025, 3, 10).start_unix_seconds() + 5 * HOUR;
        let p = plan(now, Duration::from_secs(3600), &["messages_2025_03_09".to_string()]);
        assert_eq!(p.drop, ["messages_2025_03_09"]);
        assert!(p.create.iter().all(|d| *d >= day(2025, 3, 10)), "{:?}", p.create);
        assert_eq!(p.create.len(), 4);
    }
}
