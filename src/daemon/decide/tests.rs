//! Time travel: the decision run over years of a simulated node, on a clock the test drives.
//! The simulated job renews what the order says is due (365 days from then, cut to the CA's
//! end), as `renew --due` does; everything else is the real decision and the real calendar.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::daemon::schedule::DEFAULT_SCHEDULE;

fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap()
}

/// The default window, in UTC, no spread.
fn monthly_utc() -> Calendar {
    Calendar::new(DEFAULT_SCHEDULE, Some("UTC"), std::time::Duration::ZERO).unwrap()
}

fn policy() -> Policy {
    Policy {
        warn_days: 30,
        critical_days: 7,
        ca_warn_days: 365,
        ca_critical_days: 90,
        renew_before_days: 65,
        emergency_renewal: true,
    }
}

const LEAVES: [&str; 11] = [
    "admin.conf",
    "apiserver",
    "apiserver-etcd-client",
    "apiserver-kubelet-client",
    "controller-manager.conf",
    "etcd-healthcheck-client",
    "etcd-peer",
    "etcd-server",
    "front-proxy-client",
    "scheduler.conf",
    "super-admin.conf",
];

/// A kubeadm node at `start`: 11 one-year leaves issued on different days of the past year
/// (so they do not all expire together), and three CAs good for 25 years.
fn node(start: OffsetDateTime, first_expiry_days: i64) -> Vec<Watched> {
    let mut v: Vec<Watched> = LEAVES
        .iter()
        .enumerate()
        .map(|(i, name)| Watched {
            cert: CertAlert {
                name: name.to_string(),
                path: format!("/etc/kubernetes/{name}"),
                not_before: start - Duration::days(1),
                not_after: start + Duration::days(first_expiry_days + 29 * i as i64),
                days_left: 0,
                ca: Some("ca".into()),
            },
            is_ca: false,
            renewable: true,
            capped: None,
        })
        .collect();
    for ca in ["ca", "etcd-ca", "front-proxy-ca"] {
        v.push(Watched {
            cert: CertAlert {
                name: ca.into(),
                path: format!("/etc/kubernetes/pki/{ca}.crt"),
                not_before: start - Duration::days(365),
                not_after: start + Duration::days(25 * 365),
                days_left: 0,
                ca: None,
            },
            is_ca: true,
            renewable: false,
            capped: None,
        });
    }
    v
}

/// What a run of the simulation saw.
#[derive(Default)]
struct Story {
    /// (instant, kind, certificate, reminder)
    alerts: Vec<(OffsetDateTime, Kind, String, bool)>,
    /// (instant, why, window, renewed names)
    runs: Vec<(OffsetDateTime, Why, Option<OffsetDateTime>, Vec<String>)>,
    /// the fewest seconds any renewable certificate had left at any evaluation
    tightest: i64,
    evaluations: usize,
}

/// Runs the daemon's decisions from `start` to `end`. `renew_works` says whether a renewal
/// job succeeds; `down` is an outage (no evaluation inside it).
fn simulate(
    calendar: &Calendar,
    policy: &Policy,
    certs: &mut [Watched],
    start: OffsetDateTime,
    end: OffsetDateTime,
    renew_works: bool,
    down: Option<(OffsetDateTime, OffsetDateTime)>,
) -> Story {
    // as if the daemon had been running: the last window before `start` was done
    let memory = Memory {
        last_window: calendar.last_at_or_before(start),
        ..Memory::default()
    };
    simulate_from(
        memory,
        calendar,
        policy,
        certs,
        (start, end),
        renew_works,
        down,
    )
    .0
}

/// [`simulate`] from a given memory; returns the memory at the end too.
fn simulate_from(
    mut memory: Memory,
    calendar: &Calendar,
    policy: &Policy,
    certs: &mut [Watched],
    (start, end): (OffsetDateTime, OffsetDateTime),
    renew_works: bool,
    down: Option<(OffsetDateTime, OffsetDateTime)>,
) -> (Story, Memory) {
    let mut story = Story {
        tightest: i64::MAX,
        ..Story::default()
    };
    let mut now = start;
    while now < end {
        if let Some((from, to)) = down
            && now >= from
            && now < to
        {
            now = to;
            continue;
        }
        story.evaluations += 1;
        for w in certs.iter().filter(|w| w.renewable) {
            story.tightest = story.tightest.min((w.cert.not_after - now).whole_seconds());
        }
        let d = decide(now, certs, calendar, policy, &memory, false);
        for (kind, cert, reminder) in &d.alerts {
            story
                .alerts
                .push((now, *kind, cert.name.clone(), *reminder));
        }
        memory = d.memory.clone();
        if let Some(order) = &d.renew {
            let mut renewed = Vec::new();
            if renew_works {
                let ca_ends: BTreeMap<String, OffsetDateTime> = certs
                    .iter()
                    .filter(|w| w.is_ca)
                    .map(|w| (w.cert.name.clone(), w.cert.not_after))
                    .collect();
                for w in certs.iter_mut() {
                    if w.due(now, order.due_within_days) {
                        let ca_end = ca_ends[w.cert.ca.as_deref().unwrap()];
                        w.cert.not_before = now - Duration::minutes(5);
                        w.cert.not_after = (now + Duration::days(365)).min(ca_end);
                        w.capped = (w.cert.not_after == ca_end).then_some(ca_end);
                        renewed.push(w.cert.name.clone());
                    }
                }
            }
            memory = after_job(&memory, now, order.window, renew_works, renewed.len());
            story.runs.push((now, order.why, order.window, renewed));
        }
        assert!(d.next_wake > now, "time must move: {now} → {}", d.next_wake);
        assert!(d.next_wake - now <= MAX_SLEEP, "looks at least hourly");
        now = d.next_wake;
    }
    (story, memory)
}

/// Every certificate renewed at most once per window, and never by two runs of one window.
fn assert_once_per_window(story: &Story) {
    let mut seen: BTreeSet<(Option<OffsetDateTime>, String)> = BTreeSet::new();
    let mut windows = BTreeSet::new();
    for (_, why, window, renewed) in &story.runs {
        if *why != Why::Emergency {
            assert!(windows.insert(*window), "window {window:?} ran twice");
        }
        for name in renewed {
            assert!(
                seen.insert((*window, name.clone())) || window.is_none(),
                "{name} renewed twice for window {window:?}"
            );
        }
    }
}

#[test]
fn ten_years_of_monthly_windows_never_let_a_certificate_get_critical() {
    let start = at("2026-11-29T10:00:00Z");
    let calendar = Calendar::new(
        DEFAULT_SCHEDULE,
        Some("Europe/Berlin"),
        std::time::Duration::ZERO,
    )
    .unwrap();
    let mut certs = node(start, 60);
    let end = start + Duration::days(3653);
    let story = simulate(&calendar, &policy(), &mut certs, start, end, true, None);
    assert!(
        story.tightest >= i64::from(policy().critical_days) * DAY,
        "a certificate came within {}s of expiry",
        story.tightest
    );
    // renewed 65 days ahead, they never even reach the warning threshold: no alert at all
    assert!(story.alerts.is_empty(), "{:?}", story.alerts);
    assert_once_per_window(&story);
    // one run per window (and no emergency), each a first Monday at 03:00 Berlin time
    let windows = story.runs.len();
    assert!(
        (120..=122).contains(&windows),
        "{windows} window runs in ten years"
    );
    for (when, why, window, _) in &story.runs {
        assert_eq!(*why, Why::Window);
        let local = calendar.local_rfc3339(window.unwrap());
        assert!(local.contains("T03:00:00+0"), "{local}");
        assert_eq!(*when, window.unwrap(), "ran at the window itself");
    }
    // each certificate renewed once in each stretch of its 365 days, 65 days or less before its
    // end: about every 10 to 11 months, never sooner
    let mut renewals: BTreeMap<&str, Vec<OffsetDateTime>> = BTreeMap::new();
    for (when, _, _, renewed) in &story.runs {
        for name in renewed {
            renewals.entry(name).or_default().push(*when);
        }
    }
    for name in LEAVES {
        let times = &renewals[name];
        assert!((10..=13).contains(&times.len()), "{name}: {}", times.len());
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::days(300) && gap <= Duration::days(365 - 7),
                "{name} renewed {} days after the previous time",
                gap.whole_days()
            );
        }
    }
}

#[test]
fn a_quarterly_schedule_widens_the_horizon_and_says_so() {
    let start = at("2026-11-29T10:00:00Z");
    let calendar =
        Calendar::new("0 4 1 1,4,7,10 *", Some("UTC"), std::time::Duration::ZERO).unwrap();
    let (days, note) = window_horizon(&calendar, at("2027-01-01T04:00:00Z"), &policy());
    assert_eq!(days, 90 + 7, "Jan 1 → Apr 1 is 90 days, plus critical_days");
    assert!(
        note.unwrap()
            .contains("renewing what expires within 97 days")
    );
    let (days, note) = window_horizon(&monthly_utc(), at("2027-01-04T03:00:00Z"), &policy());
    assert_eq!((days, note), (65, None), "monthly: renew_before_days rules");

    let mut certs = node(start, 60);
    let story = simulate(
        &calendar,
        &policy(),
        &mut certs,
        start,
        start + Duration::days(3653),
        true,
        None,
    );
    assert!(story.tightest >= i64::from(policy().critical_days) * DAY);
    assert_once_per_window(&story);
    assert!(story.runs.iter().all(|r| r.1 == Why::Window));
    assert!(
        (39..=41).contains(&story.runs.len()),
        "{}",
        story.runs.len()
    );
}

#[test]
fn a_certificate_three_days_from_expiry_is_renewed_at_once_not_at_the_window() {
    let start = at("2026-11-10T10:00:00Z"); // the next window is 2026-12-07
    let calendar = monthly_utc();
    let mut certs = node(start, 3);
    let mut memory = Memory {
        last_window: calendar.last_at_or_before(start),
        ..Memory::default()
    };
    let d = decide(start, &certs, &calendar, &policy(), &memory, false);
    let order = d.renew.expect("an emergency renewal");
    assert_eq!(order.why, Why::Emergency);
    assert_eq!(order.due_within_days, 7);
    assert!(
        d.alerts
            .iter()
            .any(|(k, c, r)| *k == Kind::Critical && c.name == "admin.conf" && !r)
    );
    // if it fails, it is tried again an hour later, not at every evaluation
    memory = d.memory;
    let d = decide(
        start + Duration::minutes(10),
        &certs,
        &calendar,
        &policy(),
        &memory,
        false,
    );
    assert_eq!(d.renew, None);
    assert_eq!(d.next_wake, start + Duration::hours(1));
    let d = decide(
        start + Duration::hours(1),
        &certs,
        &calendar,
        &policy(),
        &d.memory,
        false,
    );
    assert_eq!(d.renew.map(|o| o.why), Some(Why::Emergency));
    // switched off, the certificate waits for the window (and is alerted)
    let off = Policy {
        emergency_renewal: false,
        ..policy()
    };
    certs[0].cert.not_after = start + Duration::days(3);
    let d = decide(
        start,
        &certs,
        &calendar,
        &off,
        &Memory {
            last_window: calendar.last_at_or_before(start),
            ..Memory::default()
        },
        false,
    );
    assert_eq!(d.renew, None);
}

#[test]
fn a_window_missed_during_an_outage_is_caught_up_at_start() {
    let start = at("2026-11-29T10:00:00Z");
    let calendar = monthly_utc();
    let mut certs = node(start, 40);
    // down from Dec 1 to Dec 20: the Dec 7 window passes unseen
    let down = (at("2026-12-01T00:00:00Z"), at("2026-12-20T00:00:00Z"));
    let story = simulate(
        &calendar,
        &policy(),
        &mut certs,
        start,
        at("2027-02-01T00:00:00Z"),
        true,
        Some(down),
    );
    let (when, why, window, renewed) = &story.runs[0];
    assert_eq!(*why, Why::CatchUp);
    assert_eq!(
        *when, down.1,
        "caught up at the first evaluation after the outage"
    );
    assert_eq!(*window, Some(at("2026-12-07T03:00:00Z")));
    assert!(renewed.contains(&"admin.conf".to_string()), "{renewed:?}");
    assert_eq!(story.runs[1].1, Why::Window);
    assert!(story.tightest >= 7 * DAY);
}

#[test]
fn a_first_start_does_not_run_the_windows_before_it() {
    let start = at("2026-11-29T10:00:00Z");
    let calendar = monthly_utc();
    let certs = node(start, 40);
    let d = decide(
        start,
        &certs,
        &calendar,
        &policy(),
        &Memory::default(),
        false,
    );
    assert_eq!(
        d.renew, None,
        "40 days left: the next window renews them, not the install"
    );
    assert_eq!(d.memory.last_window, Some(at("2026-11-02T03:00:00Z")));
    let d = decide(
        start,
        &node(start, 3),
        &calendar,
        &policy(),
        &Memory::default(),
        false,
    );
    assert_eq!(d.renew.map(|o| o.why), Some(Why::Emergency));
}

#[test]
fn alerts_come_exactly_at_threshold_crossings_plus_one_reminder_a_day() {
    // renewals keep failing: the certificates go warning, critical, expired
    let start = at("2026-11-29T10:30:00Z");
    let calendar = monthly_utc();
    let mut certs = node(start, 40);
    certs.truncate(1); // admin.conf, 40 days left
    let expiry = certs[0].cert.not_after;
    let story = simulate(
        &calendar,
        &policy(),
        &mut certs,
        start,
        expiry + Duration::days(3),
        false,
        None,
    );
    let crossings: Vec<(OffsetDateTime, Kind)> = story
        .alerts
        .iter()
        .filter(|a| !a.3)
        .map(|a| (a.0, a.1))
        .collect();
    let expected = [
        (expiry - Duration::days(30), Kind::Expiring),
        (expiry - Duration::days(7), Kind::Critical),
        (expiry, Kind::Expired),
    ];
    assert_eq!(crossings.len(), 3, "{crossings:?}");
    for ((when, kind), (crossed, expected_kind)) in crossings.iter().zip(expected) {
        assert_eq!(*kind, expected_kind);
        assert!(
            *when >= crossed && *when - crossed <= MAX_SLEEP,
            "{kind:?} alerted at {when}, crossed at {crossed}"
        );
    }
    // reminders: at most one a day, only while not ok, never at a crossing's evaluation
    let reminders: Vec<OffsetDateTime> = story.alerts.iter().filter(|a| a.3).map(|a| a.0).collect();
    assert!(!reminders.is_empty());
    for pair in reminders.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::DAY, "{pair:?}");
    }
    assert!(reminders.iter().all(|r| *r > expiry - Duration::days(30)));
    let days_not_ok = 33;
    assert!(
        (days_not_ok - 4..=days_not_ok).contains(&(reminders.len() as i64)),
        "{} reminders in {days_not_ok} days",
        reminders.len()
    );
}

#[test]
fn dst_days_fire_their_window_exactly_once() {
    // a daily window at 02:30 Berlin time across both changes of 2027
    let calendar = Calendar::new(
        "30 2 * * *",
        Some("Europe/Berlin"),
        std::time::Duration::ZERO,
    )
    .unwrap();
    let start = at("2027-03-20T00:00:00Z");
    let mut certs = node(start, 400);
    let story = simulate(
        &calendar,
        &policy(),
        &mut certs,
        start,
        at("2027-11-10T00:00:00Z"),
        true,
        None,
    );
    let mut per_day: BTreeMap<String, usize> = BTreeMap::new();
    for (_, why, window, _) in &story.runs {
        assert_eq!(*why, Why::Window);
        let local = calendar.local_rfc3339(window.unwrap());
        *per_day.entry(local[..10].to_string()).or_default() += 1;
    }
    assert!(per_day.values().all(|n| *n == 1), "{per_day:?}");
    assert_eq!(
        per_day["2027-03-28"], 1,
        "spring forward: 02:30 does not exist"
    );
    assert_eq!(per_day["2027-10-31"], 1, "fall back: 02:30 happens twice");
    assert_eq!(per_day.len(), 235, "every day from Mar 20 to Nov 9 once");
}

#[test]
fn a_pending_restart_is_retried_hourly_not_in_a_loop() {
    let start = at("2026-11-29T10:00:00Z");
    let calendar = monthly_utc();
    let certs = node(start, 200);
    let memory = Memory {
        last_window: calendar.last_at_or_before(start),
        ..Memory::default()
    };
    let d = decide(start, &certs, &calendar, &policy(), &memory, true);
    assert!(d.restart_pending);
    // tried (the runtime answered) and failed: not again before an hour
    let mut memory = d.memory;
    memory.pending_tried = Some(start);
    let d = decide(
        start + Duration::minutes(1),
        &certs,
        &calendar,
        &policy(),
        &memory,
        true,
    );
    assert!(!d.restart_pending);
    assert_eq!(d.next_wake, start + Duration::hours(1));
    let d = decide(
        start + Duration::hours(1),
        &certs,
        &calendar,
        &policy(),
        &memory,
        true,
    );
    assert!(d.restart_pending);
    // nothing pending: nothing to retry
    let d = decide(
        start,
        &certs,
        &calendar,
        &policy(),
        &Memory::default(),
        false,
    );
    assert!(!d.restart_pending);
}

#[test]
fn a_clock_a_year_ahead_then_back_skips_no_real_window_and_heals_what_it_issued() {
    let real = at("2026-11-20T10:00:00Z");
    let calendar = monthly_utc();
    let mut certs = node(real, 100);
    let daemon_ran = Memory {
        last_window: calendar.last_at_or_before(real),
        ..Memory::default()
    };
    // a week on a clock a year ahead: a window looks missed and everything expired; all is
    // renewed then, valid from a year ahead
    let ahead = real + Duration::days(365);
    let (story, memory) = simulate_from(
        daemon_ran,
        &calendar,
        &policy(),
        &mut certs,
        (ahead, ahead + Duration::days(7)),
        true,
        None,
    );
    assert_eq!(story.runs[0].1, Why::CatchUp);
    assert_eq!(story.runs[0].3.len(), LEAVES.len());
    assert!(memory.last_window.unwrap() > ahead - Duration::days(40));
    assert!(memory.last_reminder.unwrap() >= ahead);

    // the clock corrected, a day later in real time
    let back = real + Duration::days(1);
    let d = decide(back, &certs, &calendar, &policy(), &memory, false);
    assert!(
        d.distrusted
            .iter()
            .any(|l| l.contains("the last window run")),
        "{:?}",
        d.distrusted
    );
    assert!(d.distrusted.iter().any(|l| l.contains("reminder")));
    for name in LEAVES {
        assert_eq!(d.memory.levels[name], Level::NotYetValid, "{name}");
        assert!(
            d.alerts
                .iter()
                .any(|(k, c, r)| *k == Kind::NotYetValid && c.name == name && !r)
        );
    }
    // the newest trustworthy evidence is the CAs' issue: the window before it counts as run,
    // the one since (2026-11-02) is caught up, renewing what is not valid yet
    let order = d.renew.clone().expect("a renewal now");
    assert_eq!(order.why, Why::CatchUp);
    assert_eq!(order.window, Some(at("2026-11-02T03:00:00Z")));
    assert!(d.memory.last_window.unwrap() < at("2026-11-02T03:00:00Z"));
    // on: the real windows run, every certificate is valid at every look
    let (story, memory) = simulate_from(
        memory,
        &calendar,
        &policy(),
        &mut certs,
        (back, back + Duration::days(120)),
        true,
        None,
    );
    let (when, _, _, renewed) = &story.runs[0];
    assert_eq!(*when, back);
    assert_eq!(renewed.len(), LEAVES.len(), "{renewed:?}");
    let windows: Vec<OffsetDateTime> = story
        .runs
        .iter()
        .filter(|r| r.1 == Why::Window)
        .map(|r| r.2.unwrap())
        .collect();
    assert_eq!(
        windows,
        [
            at("2026-12-07T03:00:00Z"),
            at("2027-01-04T03:00:00Z"),
            at("2027-02-01T03:00:00Z"),
            at("2027-03-01T03:00:00Z"),
        ]
    );
    assert!(memory.last_window.unwrap() <= back + Duration::days(120));
    let end = back + Duration::days(120);
    assert!(certs.iter().all(|w| w.cert.not_before <= end));
    assert!(
        story
            .alerts
            .iter()
            .all(|a| a.0 == back && a.1 == Kind::NotYetValid),
        "{:?}",
        story.alerts
    );
}

#[test]
fn a_certificate_not_valid_yet_is_critical_and_renewed_at_once() {
    let now = at("2026-11-10T10:00:00Z");
    let calendar = monthly_utc();
    let mut certs = node(now, 200);
    certs[1].cert.not_before = now + Duration::hours(2);
    let memory = Memory {
        last_window: calendar.last_at_or_before(now),
        ..Memory::default()
    };
    let d = decide(now, &certs, &calendar, &policy(), &memory, false);
    assert_eq!(d.memory.levels["apiserver"], Level::NotYetValid);
    assert_eq!(
        d.alerts
            .iter()
            .map(|(k, c, _)| (*k, c.name.as_str()))
            .collect::<Vec<_>>(),
        [(Kind::NotYetValid, "apiserver")]
    );
    assert_eq!(d.renew.map(|o| o.why), Some(Why::Emergency));
    assert!(d.distrusted.is_empty());
    // once valid, it is ok again (no alert on the way down)
    let later = decide(
        now + Duration::hours(3),
        &certs,
        &calendar,
        &policy(),
        &d.memory,
        false,
    );
    assert_eq!(later.memory.levels["apiserver"], Level::Ok);
    assert!(later.alerts.is_empty());
}

#[test]
fn timers_recorded_under_a_clock_ahead_hold_nothing_off() {
    let now = at("2026-11-10T10:00:00Z");
    let calendar = monthly_utc();
    let certs = node(now, 3);
    let year = Duration::days(365);
    let memory = Memory {
        last_window: calendar.last_at_or_before(now),
        last_emergency: Some(now + year),
        last_reminder: Some(now + year),
        pending_tried: Some(now + year),
        ..Memory::default()
    };
    let d = decide(now, &certs, &calendar, &policy(), &memory, true);
    assert_eq!(d.renew.map(|o| o.why), Some(Why::Emergency));
    assert_eq!(d.memory.last_emergency, Some(now));
    assert_eq!(d.distrusted.len(), 3, "{:?}", d.distrusted);
    // within the slack, a recorded instant is trusted (a clock stepped back a little)
    let memory = Memory {
        last_emergency: Some(now + Duration::minutes(5)),
        ..memory
    };
    let d = decide(now, &certs, &calendar, &policy(), &memory, false);
    assert_eq!(d.renew, None);
    assert!(!d.distrusted.iter().any(|l| l.contains("emergency")));
}

#[test]
fn a_failed_window_is_not_recorded_and_is_tried_again_an_hour_later() {
    let calendar = monthly_utc();
    let window = at("2026-12-07T03:00:00Z");
    let mut certs = node(window, 40);
    certs[0].cert.not_after = window + Duration::days(3); // critical too
    let memory = Memory {
        last_window: calendar.last_at_or_before(window - Duration::DAY),
        ..Memory::default()
    };
    let d = decide(window, &certs, &calendar, &policy(), &memory, false);
    let order = d.renew.clone().unwrap();
    assert_eq!((order.why, order.window), (Why::Window, Some(window)));
    let failed = after_job(&d.memory, window, order.window, false, 0);
    assert_eq!(failed.last_window, memory.last_window, "not recorded");
    assert_eq!(failed.window_failed, Some(window));
    assert_eq!(failed.last_run.as_ref().map(|r| r.success), Some(false));
    // not in a loop: neither the window nor the emergency rule before the hour
    let soon = window + Duration::minutes(10);
    let d = decide(soon, &certs, &calendar, &policy(), &failed, false);
    assert_eq!(d.renew, None);
    assert_eq!(d.next_wake, window + WINDOW_RETRY);
    let d = decide(
        window + WINDOW_RETRY,
        &certs,
        &calendar,
        &policy(),
        &failed,
        false,
    );
    let order = d.renew.clone().unwrap();
    assert_eq!((order.why, order.window), (Why::CatchUp, Some(window)));
    assert!(
        order
            .note
            .as_deref()
            .is_some_and(|n| n.contains("failed at")),
        "{order:?}"
    );
    let done = after_job(&d.memory, window + WINDOW_RETRY, order.window, true, 11);
    assert_eq!(done.last_window, Some(window));
    assert_eq!(done.window_failed, None);
    certs[0].cert.not_after = window + Duration::days(365);
    let d = decide(
        window + Duration::hours(2),
        &certs,
        &calendar,
        &policy(),
        &done,
        false,
    );
    assert_eq!(d.renew, None);
}

#[test]
fn a_window_a_renewal_stands_for_is_taken_as_run_when_the_record_is_from_the_future() {
    let calendar = monthly_utc();
    let window = at("2026-12-07T03:00:00Z");
    let now = window + Duration::days(2);
    let mut certs = node(now, 200);
    // renewed by that window's job (NotBefore backdated five minutes)
    certs[3].cert.not_before = window - Duration::minutes(5);
    let memory = Memory {
        last_window: Some(now + Duration::days(365)),
        ..Memory::default()
    };
    let d = decide(now, &certs, &calendar, &policy(), &memory, false);
    assert_eq!(d.memory.last_window, Some(window));
    assert_eq!(d.renew, None, "no catch-up of the window that ran");
    assert_eq!(d.distrusted.len(), 1, "{:?}", d.distrusted);
    // a window minutes ahead is never taken as run, however recent the evidence
    let soon = window - Duration::minutes(3);
    let mut certs = node(soon, 200);
    certs[3].cert.not_before = soon - Duration::minutes(1);
    let d = decide(soon, &certs, &calendar, &policy(), &memory, false);
    assert!(d.memory.last_window.unwrap() < soon);
    let d = decide(window, &certs, &calendar, &policy(), &d.memory, false);
    assert_eq!(d.renew.map(|o| o.why), Some(Why::Window));
}

/// The node of issue 18: its CA ends in 5 days. The emergency rule renews the leaves (3 days
/// left) once, up to the CA's end; from then on they are capped: no renewal again — not the
/// next hour, not at the window — no own critical alert every day, and one capping alert
/// naming the CA and its leaves, reminded daily.
#[test]
fn leaves_at_their_cas_end_are_renewed_once_and_then_left_to_the_ca() {
    let start = at("2026-12-03T10:00:00Z"); // the window of 2026-12-07 comes in the story
    let calendar = monthly_utc();
    let mut certs = node(start, 3);
    for w in certs.iter_mut() {
        w.cert.not_after = if w.is_ca {
            start + Duration::days(5)
        } else {
            start + Duration::days(3)
        };
    }
    let end = start + Duration::days(4) + Duration::hours(23);
    let story = simulate(&calendar, &policy(), &mut certs, start, end, true, None);
    assert!(story.evaluations > 100, "{}", story.evaluations);
    assert_eq!(story.runs.len(), 2, "{:?}", story.runs);
    let (_, why, _, renewed) = &story.runs[0];
    assert_eq!(
        (*why, renewed.len()),
        (Why::Emergency, 11),
        "{:?}",
        story.runs
    );
    // the window of 2026-12-07 runs, and renews nothing (nothing to restart)
    let (when, why, _, renewed) = &story.runs[1];
    assert_eq!(*why, Why::Window, "{:?}", story.runs);
    assert!(renewed.is_empty(), "renewed again at {when}: {renewed:?}");
    for w in certs.iter().filter(|w| !w.is_ca) {
        assert_eq!(w.capped, Some(start + Duration::days(5)), "{}", w.cert.name);
    }
    // the leaves' own critical alert comes once, before their renewal; after it only the CA
    // speaks: its critical reminders and the capping alert
    let leaf_alerts: Vec<_> = story
        .alerts
        .iter()
        .filter(|(_, _, name, _)| LEAVES.contains(&name.as_str()))
        .collect();
    assert_eq!(leaf_alerts.len(), 11, "{leaf_alerts:?}");
    assert!(
        leaf_alerts
            .iter()
            .all(|(t, k, _, r)| *t == start && *k == Kind::Critical && !r)
    );
    let ca_reminders = story
        .alerts
        .iter()
        .filter(|(_, k, name, r)| name == "ca" && *k == Kind::Critical && *r)
        .count();
    assert_eq!(ca_reminders, 4, "{:?}", story.alerts);
}

/// The capping alert itself: news when a CA starts capping (or the set changes), then a daily
/// reminder; a capped leaf graver than its CA's row still alerts on its own.
#[test]
fn a_capping_ca_is_said_when_it_changes_and_daily() {
    let start = at("2026-11-30T10:00:00Z");
    let calendar = monthly_utc();
    let ca_end = start + Duration::days(5);
    let mut certs = node(start, 5);
    for w in certs.iter_mut() {
        w.cert.not_after = ca_end;
        if !w.is_ca {
            w.capped = Some(ca_end);
        }
    }
    let memory = Memory {
        last_window: calendar.last_at_or_before(start),
        ..Memory::default()
    };
    let d = decide(start, &certs, &calendar, &policy(), &memory, false);
    assert_eq!(d.renew, None, "capped leaves are never due");
    assert_eq!(d.capping.len(), 1, "{:?}", d.capping);
    let c = &d.capping[0];
    assert_eq!((c.ca.as_str(), c.at, c.reminder), ("ca", ca_end, false));
    assert_eq!(c.leaves.len(), 11);
    assert_eq!(c.path, "/etc/kubernetes/pki/ca.crt");
    // the CA is critical itself; none of its capped leaves says so on its own
    let names: Vec<&str> = d.alerts.iter().map(|(_, c, _)| c.name.as_str()).collect();
    assert_eq!(names, ["ca", "etcd-ca", "front-proxy-ca"], "{:?}", d.alerts);
    assert_eq!(d.memory.levels["apiserver"], Level::Ok);
    // an hour later: nothing new
    let d = decide(
        start + Duration::hours(1),
        &certs,
        &calendar,
        &policy(),
        &d.memory,
        false,
    );
    assert!(
        d.capping.is_empty() && d.alerts.is_empty() && d.renew.is_none(),
        "{d:?}"
    );
    // a day later: the reminder
    let day = start + Duration::days(1);
    let d = decide(day, &certs, &calendar, &policy(), &d.memory, false);
    assert_eq!(d.capping.len(), 1, "{:?}", d.capping);
    assert!(d.capping[0].reminder);
    // one leaf renewed away from the cap (a new CA): the set changed, which is news
    certs[1].capped = None;
    certs[1].cert.not_after = day + Duration::days(365);
    let later = day + Duration::hours(2);
    let d = decide(later, &certs, &calendar, &policy(), &d.memory, false);
    assert_eq!(d.capping.len(), 1);
    assert!(!d.capping[0].reminder);
    assert_eq!(d.capping[0].leaves.len(), 10);
    // a capped leaf whose CA row is less grave (the row shows the new CA of a bundle, the old
    // one caps): it alerts on its own
    for w in certs.iter_mut().filter(|w| w.is_ca) {
        w.cert.not_after = later + Duration::days(3650);
    }
    let d = decide(
        later,
        &certs,
        &calendar,
        &policy(),
        &Memory::default(),
        false,
    );
    assert!(
        d.alerts
            .iter()
            .any(|(k, c, _)| *k == Kind::Critical && c.name == "admin.conf"),
        "{:?}",
        d.alerts
    );
}
