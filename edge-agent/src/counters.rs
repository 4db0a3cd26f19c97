//! Usage counters the evaluator reads: per run, per session, per UTC
//! calendar period and over rolling windows.
//!
//! One [`CounterTable`] per agent, always used under one lock together
//! with the decision that reads it (see `engine`), so "check and add" is
//! atomic: concurrent steps of a run or a session are decided one after
//! another and never both admitted against the same remaining budget.
//!
//! Calendar and rolling windows count the whole tenant (this agent serves
//! one tenant). Rolling windows live in memory only: after a restart they
//! are *unknown* for as long as the longest window, and the evaluator
//! applies each policy's failure mode to them (GAP-035) rather than
//! pretending they are zero.

use std::collections::{HashMap, VecDeque};

use aos_core::counters::{CounterKey, CounterSource, CounterWindow, Metric};
use aos_core::policy::Period;
use serde::{Deserialize, Serialize};

/// Amounts of every metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens.
    pub tokens: u64,
    /// Spend, micro-USD.
    pub cost_micros: u64,
    /// Steps started.
    pub requests: u64,
    /// SQL gateway queries.
    pub db_queries: u64,
}

impl Usage {
    /// The amount of `metric`.
    pub fn get(&self, metric: Metric) -> u64 {
        match metric {
            Metric::Tokens => self.tokens,
            Metric::CostMicros => self.cost_micros,
            Metric::Requests => self.requests,
            Metric::DbQueries => self.db_queries,
        }
    }

    /// Adds `other` (saturating).
    pub fn add(&mut self, other: &Usage) {
        self.tokens = self.tokens.saturating_add(other.tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        self.requests = self.requests.saturating_add(other.requests);
        self.db_queries = self.db_queries.saturating_add(other.db_queries);
    }

    /// Subtracts `other` (saturating at zero): releasing a reservation.
    pub fn sub(&mut self, other: &Usage) {
        self.tokens = self.tokens.saturating_sub(other.tokens);
        self.cost_micros = self.cost_micros.saturating_sub(other.cost_micros);
        self.requests = self.requests.saturating_sub(other.requests);
        self.db_queries = self.db_queries.saturating_sub(other.db_queries);
    }
}

/// The longest rolling window kept: a day.
const MAX_ROLLING_MS: u64 = 24 * 3_600_000;

/// Every counter of the tenant.
#[derive(Debug, Default)]
pub struct CounterTable {
    runs: HashMap<String, Usage>,
    sessions: HashMap<String, Usage>,
    calendar: HashMap<(Period, u64), Usage>,
    rolling: VecDeque<(u64, Usage)>,
    rolling_unknown_until_ms: u64,
}

impl CounterTable {
    /// A table after a restart at `now_ms`: run and session totals come
    /// back from the persisted runs (`restore_run`), calendar windows too;
    /// rolling windows are unknown for `unknown_for_ms` (the longest rolling
    /// window the snapshot uses).
    pub fn after_restart(now_ms: u64, unknown_for_ms: u64) -> CounterTable {
        CounterTable {
            rolling_unknown_until_ms: now_ms.saturating_add(unknown_for_ms.min(MAX_ROLLING_MS)),
            ..CounterTable::default()
        }
    }

    /// Restores a persisted run's usage into its run, session and calendar
    /// counters (calendar at the run's last activity).
    pub fn restore_run(&mut self, run_id: &str, session_id: Option<&str>, usage: &Usage, at_ms: u64) {
        self.runs.entry(run_id.to_owned()).or_default().add(usage);
        if let Some(s) = session_id {
            self.sessions.entry(s.to_owned()).or_default().add(usage);
        }
        for period in PERIODS {
            self.calendar.entry((period, bucket(period, at_ms))).or_default().add(usage);
        }
    }

    /// Adds usage of a run at `now_ms` to every window.
    pub fn add(&mut self, run_id: &str, session_id: Option<&str>, usage: &Usage, now_ms: u64) {
        add_to(&mut self.runs, run_id, usage);
        if let Some(s) = session_id {
            add_to(&mut self.sessions, s, usage);
        }
        for period in PERIODS {
            self.calendar.entry((period, bucket(period, now_ms))).or_default().add(usage);
        }
        // One rolling entry per second of activity, stamped with its latest
        // add: an entry per step grew without bound under load (a day of
        // 1,000 steps/s was ~3.5 GB) and made every rolling-window read walk
        // every step of the window. An entry counts until its latest add
        // leaves the window, so up to a second of older usage may still be
        // counted — more restrictive, never less.
        match self.rolling.back_mut() {
            Some((at, u)) if *at / 1000 == now_ms / 1000 => {
                *at = (*at).max(now_ms);
                u.add(usage);
            }
            _ => self.rolling.push_back((now_ms, *usage)),
        }
        while self.rolling.front().is_some_and(|(at, _)| at.saturating_add(MAX_ROLLING_MS) < now_ms) {
            self.rolling.pop_front();
        }
    }

    /// Takes usage back out of a run (a released reservation). Calendar and
    /// rolling windows are corrected too.
    pub fn subtract(&mut self, run_id: &str, session_id: Option<&str>, usage: &Usage, reserved_at_ms: u64) {
        if let Some(u) = self.runs.get_mut(run_id) {
            u.sub(usage);
        }
        if let Some(u) = session_id.and_then(|s| self.sessions.get_mut(s)) {
            u.sub(usage);
        }
        for period in PERIODS {
            if let Some(u) = self.calendar.get_mut(&(period, bucket(period, reserved_at_ms))) {
                u.sub(usage);
            }
        }
        let mut negative = *usage;
        for (at, u) in self.rolling.iter_mut().rev() {
            if *at < reserved_at_ms {
                break;
            }
            let take = Usage {
                tokens: negative.tokens.min(u.tokens),
                cost_micros: negative.cost_micros.min(u.cost_micros),
                requests: negative.requests.min(u.requests),
                db_queries: negative.db_queries.min(u.db_queries),
            };
            u.sub(&take);
            negative.sub(&take);
        }
    }

    /// The usage of one run.
    pub fn run(&self, run_id: &str) -> Usage {
        self.runs.get(run_id).copied().unwrap_or_default()
    }

    /// The view `decide` reads for a step of `run_id` at `now_ms`.
    pub fn view<'a>(&'a self, run_id: &'a str, session_id: Option<&'a str>, now_ms: u64) -> CounterView<'a> {
        CounterView { table: self, run_id, session_id, now_ms }
    }
}

const PERIODS: [Period; 3] = [Period::Hourly, Period::Daily, Period::Monthly];

/// Adds `usage` to `key`'s counter, allocating the key only when it is new
/// (this runs for every step).
fn add_to(map: &mut HashMap<String, Usage>, key: &str, usage: &Usage) {
    match map.get_mut(key) {
        Some(u) => u.add(usage),
        None => {
            let mut u = Usage::default();
            u.add(usage);
            map.insert(key.to_owned(), u);
        }
    }
}

/// The counters as seen by one step.
#[derive(Debug, Clone, Copy)]
pub struct CounterView<'a> {
    table: &'a CounterTable,
    run_id: &'a str,
    session_id: Option<&'a str>,
    now_ms: u64,
}

impl CounterSource for CounterView<'_> {
    fn counter(&self, key: &CounterKey) -> Option<u64> {
        let t = self.table;
        let usage = match key.window {
            CounterWindow::PerRun => t.runs.get(self.run_id).copied().unwrap_or_default(),
            // A run without a session is a session of one.
            CounterWindow::PerSession => match self.session_id {
                Some(s) => t.sessions.get(s).copied().unwrap_or_default(),
                None => t.runs.get(self.run_id).copied().unwrap_or_default(),
            },
            CounterWindow::Calendar(period) => {
                t.calendar.get(&(period, bucket(period, self.now_ms))).copied().unwrap_or_default()
            }
            CounterWindow::Rolling { seconds } => {
                if self.now_ms < t.rolling_unknown_until_ms {
                    return None;
                }
                let from = self.now_ms.saturating_sub(seconds.saturating_mul(1000));
                let mut sum = Usage::default();
                for (_, u) in t.rolling.iter().rev().take_while(|(at, _)| *at > from) {
                    sum.add(u);
                }
                sum
            }
        };
        Some(usage.get(key.metric))
    }
}

/// The calendar bucket of `now_ms` (hours, days, or months since 1970).
fn bucket(period: Period, now_ms: u64) -> u64 {
    match period {
        Period::Hourly => now_ms / 3_600_000,
        Period::Daily => now_ms / 86_400_000,
        Period::Monthly => {
            let (year, month) = civil_year_month(now_ms / 86_400_000);
            year * 12 + month
        }
    }
}

/// Year and month (1..=12) of a day count since 1970-01-01 (proleptic
/// Gregorian; H. Hinnant's `civil_from_days`).
fn civil_year_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(metric: Metric, window: CounterWindow) -> CounterKey {
        CounterKey { metric, window }
    }

    #[test]
    fn months_follow_the_calendar() {
        // 2024-02-29 and 2024-03-01 (leap year), 1970-01-01.
        assert_eq!(civil_year_month(19_782), (2024, 2));
        assert_eq!(civil_year_month(19_783), (2024, 3));
        assert_eq!(civil_year_month(0), (1970, 1));
        assert_eq!(civil_year_month(20_453), (2025, 12));
        assert_eq!(civil_year_month(20_454), (2026, 1));
    }

    #[test]
    fn runs_sessions_and_windows_accumulate_separately() {
        let mut t = CounterTable::default();
        let now = 1_700_000_000_000;
        let step = Usage { tokens: 100, cost_micros: 5, requests: 1, db_queries: 0 };
        t.add("r1", Some("s"), &step, now);
        t.add("r2", Some("s"), &step, now + 1_000);
        t.add("r3", None, &step, now + 2_000);
        let v = t.view("r1", Some("s"), now + 2_000);
        assert_eq!(v.counter(&key(Metric::Tokens, CounterWindow::PerRun)), Some(100));
        assert_eq!(v.counter(&key(Metric::Tokens, CounterWindow::PerSession)), Some(200));
        assert_eq!(v.counter(&key(Metric::Requests, CounterWindow::Calendar(Period::Daily))), Some(3));
        assert_eq!(v.counter(&key(Metric::Tokens, CounterWindow::Rolling { seconds: 2 })), Some(200));
        let lone = t.view("r3", None, now + 2_000);
        assert_eq!(
            lone.counter(&key(Metric::Tokens, CounterWindow::PerSession)),
            Some(100),
            "session of one"
        );
        // Next hour: the hourly bucket starts at zero, the daily one does not.
        let later = t.view("r1", Some("s"), now + 3_600_000);
        assert_eq!(later.counter(&key(Metric::Requests, CounterWindow::Calendar(Period::Hourly))), Some(0));
    }

    #[test]
    fn a_released_reservation_leaves_no_trace() {
        let mut t = CounterTable::default();
        let now = 1_700_000_000_000;
        let reserved = Usage { tokens: 500, ..Usage::default() };
        t.add("r", Some("s"), &reserved, now);
        t.subtract("r", Some("s"), &reserved, now);
        let v = t.view("r", Some("s"), now);
        for window in
            [CounterWindow::PerRun, CounterWindow::PerSession, CounterWindow::Rolling { seconds: 60 }]
        {
            assert_eq!(v.counter(&key(Metric::Tokens, window)), Some(0), "{window:?}");
        }
    }

    #[test]
    fn rolling_windows_keep_one_entry_per_second_and_count_every_step() {
        let mut t = CounterTable::default();
        let now = 1_700_000_000_000;
        let step = Usage { tokens: 3, cost_micros: 1, requests: 1, db_queries: 0 };
        // 10,000 steps over five seconds.
        for i in 0..10_000_u64 {
            t.add("r", None, &step, now + i / 2);
        }
        assert_eq!(t.rolling.len(), 5, "one entry per second of activity");
        let v = t.view("r", None, now + 4_999);
        assert_eq!(v.counter(&key(Metric::Tokens, CounterWindow::Rolling { seconds: 60 })), Some(30_000));
        assert_eq!(v.counter(&key(Metric::Requests, CounterWindow::Rolling { seconds: 60 })), Some(10_000));
        // A 2 s window read at the end holds the last two seconds and the
        // second whose latest step is still inside it: never less than the
        // steps of the window itself (fail closed).
        let two =
            v.counter(&key(Metric::Requests, CounterWindow::Rolling { seconds: 2 })).unwrap_or_default();
        assert!((4_000..=6_000).contains(&two), "{two}");
        // Released reservations come out of the coalesced entry.
        t.subtract("r", None, &Usage { tokens: 3, ..Usage::default() }, now + 4_998);
        let v = t.view("r", None, now + 4_999);
        assert_eq!(v.counter(&key(Metric::Tokens, CounterWindow::Rolling { seconds: 60 })), Some(29_997));
        // Long after, nothing is in the window.
        let later = t.view("r", None, now + 120_000);
        assert_eq!(later.counter(&key(Metric::Tokens, CounterWindow::Rolling { seconds: 60 })), Some(0));
    }

    #[test]
    fn rolling_windows_are_unknown_after_a_restart() {
        let now = 1_700_000_000_000;
        let t = CounterTable::after_restart(now, 60_000);
        let v = t.view("r", None, now + 1);
        assert_eq!(v.counter(&key(Metric::Tokens, CounterWindow::Rolling { seconds: 60 })), None);
        assert_eq!(v.counter(&key(Metric::Tokens, CounterWindow::PerRun)), Some(0));
    }
}
