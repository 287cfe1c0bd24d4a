//! The Lease object and the pure rules of taking it: what the API holds, and what one node does
//! next given what it saw and when. No I/O, no clock: the caller passes both, so the rules are
//! tested by travelling in time.
//!
//! Expiry is judged the way client-go's leader election judges it: by how long the caller itself
//! has seen the same version of the object, not by the `renewTime` written by another node's
//! clock. A lease whose holder keeps renewing it changes version at every renewal, so it never
//! looks expired, whatever the clocks say; a crashed holder's lease stops changing and is free a
//! full `leaseDurationSeconds` after the caller first saw that version.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Namespace of the Lease: kube-system, where kubeadm's own objects live and only admins write.
pub const NAMESPACE: &str = "kube-system";
/// Name of the Lease every node of the cluster takes before restarting anything.
pub const NAME: &str = "kube-cert-renewer";

/// API path of the collection (POST creates the Lease there).
pub fn collection_path() -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases")
}

/// API path of the Lease itself (GET, PUT).
pub fn object_path() -> String {
    format!("{}/{NAME}", collection_path())
}

/// What the caller needs to know of a Lease as the API returned it; the object itself is kept
/// whole so a PUT sends back every field this code does not know about.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The object as read (JSON).
    pub object: Value,
    /// `metadata.resourceVersion`: what a PUT must quote, and what tells a renewal happened.
    pub resource_version: String,
    /// `spec.holderIdentity`, `None` when empty or absent (released).
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub duration_secs: Option<i64>,
    /// `spec.renewTime`, as the holder's clock wrote it (shown, never trusted for expiry).
    pub renew_time: Option<OffsetDateTime>,
    /// `spec.acquireTime`.
    pub acquire_time: Option<OffsetDateTime>,
    /// `spec.leaseTransitions`.
    pub transitions: i64,
}

impl Lease {
    /// Reads a Lease from the API's JSON; anything that is not one is an error saying what came.
    pub fn from_json(body: &str) -> Result<Lease, String> {
        let object: Value = serde_json::from_str(body).map_err(|_| {
            format!(
                "the answer is not a Lease (not JSON: {:?})",
                body.chars().take(80).collect::<String>()
            )
        })?;
        if object.get("kind").and_then(Value::as_str) != Some("Lease") {
            return Err(format!(
                "the answer is not a Lease (kind {})",
                object.get("kind").unwrap_or(&Value::Null)
            ));
        }
        let resource_version = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .ok_or("the Lease has no metadata.resourceVersion")?
            .to_string();
        let spec = object.get("spec").cloned().unwrap_or(Value::Null);
        let time_of = |field: &str| {
            spec.get(field)
                .and_then(Value::as_str)
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        };
        Ok(Lease {
            resource_version,
            holder: spec
                .get("holderIdentity")
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
                .map(str::to_string),
            duration_secs: spec.get("leaseDurationSeconds").and_then(Value::as_i64),
            renew_time: time_of("renewTime"),
            acquire_time: time_of("acquireTime"),
            transitions: spec
                .get("leaseTransitions")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            object,
        })
    }
}

/// The Lease's times as the API writes them (`MicroTime`: RFC 3339 with microseconds, UTC).
pub fn micro_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// The body of a POST that creates the Lease held by `me`.
pub fn new_lease(me: &str, duration_secs: i64, now: OffsetDateTime) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "holderIdentity": me,
            "leaseDurationSeconds": duration_secs,
            "acquireTime": micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": 0,
        }
    })
}

/// The body of a PUT that changes `lease`'s spec (and quotes its resourceVersion, so a writer
/// that came in between makes the API answer 409 instead of being overwritten).
fn with_spec(lease: &Lease, change: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut object = lease.object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(lease.resource_version.clone()),
        );
    }
    if !object.get("spec").is_some_and(Value::is_object) {
        object["spec"] = json!({});
    }
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        change(spec);
    }
    object
}

/// `me` takes a lease that is free or expired: a new holder, a new acquire time, one more
/// transition.
pub fn taken(lease: &Lease, me: &str, duration_secs: i64, now: OffsetDateTime) -> Value {
    with_spec(lease, |spec| {
        spec.insert("holderIdentity".into(), json!(me));
        spec.insert("leaseDurationSeconds".into(), json!(duration_secs));
        spec.insert("acquireTime".into(), json!(micro_time(now)));
        spec.insert("renewTime".into(), json!(micro_time(now)));
        spec.insert("leaseTransitions".into(), json!(lease.transitions + 1));
    })
}

/// The holder renews: only `renewTime` moves.
pub fn renewed(lease: &Lease, now: OffsetDateTime) -> Value {
    with_spec(lease, |spec| {
        spec.insert("renewTime".into(), json!(micro_time(now)));
    })
}

/// The holder lets go: no holder, so the next node need not wait for an expiry.
pub fn released(lease: &Lease, now: OffsetDateTime) -> Value {
    with_spec(lease, |spec| {
        spec.insert("holderIdentity".into(), json!(""));
        spec.insert("renewTime".into(), json!(micro_time(now)));
    })
}

/// What the caller has seen of the Lease: the version, and since when (its own monotonic clock,
/// in milliseconds from any origin it likes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The resourceVersion seen.
    pub resource_version: String,
    /// When the caller first saw that version.
    pub since_ms: u64,
}

/// Notes that `lease` was seen at `now_ms`: the same version keeps its first sighting, a new
/// one starts the count again.
pub fn observe(previous: Option<Seen>, lease: &Lease, now_ms: u64) -> Seen {
    match previous {
        Some(seen) if seen.resource_version == lease.resource_version => seen,
        _ => Seen {
            resource_version: lease.resource_version.clone(),
            since_ms: now_ms,
        },
    }
}

/// What a node does next about the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// There is none yet: create it, held.
    Create,
    /// It is free (released) or its holder stopped renewing it: take it.
    Take {
        /// The holder whose lease expired, when there was one.
        expired_holder: Option<String>,
    },
    /// It is already ours (a previous run of this node crashed holding it): renew and go on.
    Ours,
    /// Someone else holds it and renews it: wait.
    Wait {
        /// The holder.
        holder: String,
        /// Seconds until it would expire if its holder stopped renewing now.
        expires_in_secs: u64,
    },
}

/// The rule: free → take; ours → go on; someone else's → wait until it has not changed for a
/// whole lease duration (its own, else `default_duration_secs`), on the caller's clock in
/// milliseconds (`now_ms`, the origin of [`Seen::since_ms`]).
pub fn next(
    lease: Option<&Lease>,
    seen: Option<&Seen>,
    me: &str,
    now_ms: u64,
    default_duration_secs: i64,
) -> Next {
    let Some(lease) = lease else {
        return Next::Create;
    };
    let Some(holder) = &lease.holder else {
        return Next::Take {
            expired_holder: None,
        };
    };
    if holder == me {
        return Next::Ours;
    }
    let duration_ms = u64::try_from(
        lease
            .duration_secs
            .filter(|d| *d > 0)
            .unwrap_or(default_duration_secs),
    )
    .unwrap_or(0)
    .saturating_mul(1000);
    let since = match seen {
        Some(s) if s.resource_version == lease.resource_version => s.since_ms,
        _ => now_ms,
    };
    let unchanged_for = now_ms.saturating_sub(since);
    if unchanged_for >= duration_ms {
        Next::Take {
            expired_holder: Some(holder.clone()),
        }
    } else {
        Next::Wait {
            holder: holder.clone(),
            expires_in_secs: (duration_ms - unchanged_for).div_ceil(1000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn lease(rv: &str, holder: &str, duration: i64) -> Lease {
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "resourceVersion": rv,
                         "uid": "u-1", "annotations": {"keep": "me"}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "renewTime": "2026-11-29T10:00:00.123456Z", "leaseTransitions": 4}
        });
        Lease::from_json(&body.to_string()).unwrap()
    }

    #[test]
    fn reads_what_the_api_returns_and_refuses_anything_else() {
        let l = lease("17", "cp-2", 30);
        assert_eq!(l.resource_version, "17");
        assert_eq!(l.holder.as_deref(), Some("cp-2"));
        assert_eq!(l.duration_secs, Some(30));
        assert_eq!(l.transitions, 4);
        assert_eq!(
            l.renew_time,
            Some(datetime!(2026-11-29 10:00:00.123456 UTC))
        );
        assert!(lease("1", "", 30).holder.is_none());
        for bad in [
            "<html>ok</html>",
            r#"{"kind":"Status","status":"Failure"}"#,
            r#"{"kind":"Lease","metadata":{}}"#,
        ] {
            assert!(Lease::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_keep_unknown_fields_and_quote_the_version() {
        let l = lease("17", "cp-2", 30);
        let now = datetime!(2026-11-29 10:01:02.5 UTC);
        let body = taken(&l, "cp-1", 60, now);
        assert_eq!(body["metadata"]["resourceVersion"], "17");
        assert_eq!(body["metadata"]["annotations"]["keep"], "me");
        assert_eq!(body["spec"]["holderIdentity"], "cp-1");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 60);
        assert_eq!(body["spec"]["leaseTransitions"], 5);
        assert_eq!(body["spec"]["acquireTime"], "2026-11-29T10:01:02.500000Z");
        let body = renewed(&l, now);
        assert_eq!(body["spec"]["holderIdentity"], "cp-2");
        assert_eq!(body["spec"]["renewTime"], "2026-11-29T10:01:02.500000Z");
        assert_eq!(released(&l, now)["spec"]["holderIdentity"], "");
        let created = new_lease("cp-3", 60, now);
        let parsed = Lease::from_json(
            &json!({"kind":"Lease","metadata":{"resourceVersion":"1"},"spec":created["spec"]})
                .to_string(),
        )
        .unwrap();
        assert_eq!(parsed.holder.as_deref(), Some("cp-3"));
        assert_eq!(parsed.acquire_time, Some(now));
    }

    #[test]
    fn a_renewed_lease_is_never_taken_a_silent_one_is_after_its_duration() {
        assert_eq!(next(None, None, "cp-1", 0, 60), Next::Create);
        let held = lease("5", "cp-2", 30);
        // first sighting: a whole duration to wait, whatever renewTime says
        let seen = observe(None, &held, 100_000);
        assert_eq!(
            next(Some(&held), Some(&seen), "cp-1", 100_000, 60),
            Next::Wait {
                holder: "cp-2".into(),
                expires_in_secs: 30
            }
        );
        // the holder renews every 10 s: the version changes, the count starts again, forever
        let mut seen = seen;
        for i in 1..=100u64 {
            let renewed = lease(&format!("{}", 5 + i), "cp-2", 30);
            seen = observe(Some(seen), &renewed, 100_000 + 10_000 * i);
            assert!(matches!(
                next(
                    Some(&renewed),
                    Some(&seen),
                    "cp-1",
                    100_000 + 10_000 * i + 9_999,
                    60
                ),
                Next::Wait { .. }
            ));
        }
        // the holder crashed: the same version for 30 s → expired
        let silent = lease("999", "cp-2", 30);
        let seen = observe(Some(seen), &silent, 2_000_000);
        assert!(matches!(
            next(Some(&silent), Some(&seen), "cp-1", 2_029_001, 60),
            Next::Wait {
                expires_in_secs: 1,
                ..
            }
        ));
        assert_eq!(
            next(Some(&silent), Some(&seen), "cp-1", 2_030_000, 60),
            Next::Take {
                expired_holder: Some("cp-2".into())
            }
        );
        // released, or ours from a crashed run of this node
        assert_eq!(
            next(Some(&lease("9", "", 30)), None, "cp-1", 0, 60),
            Next::Take {
                expired_holder: None
            }
        );
        assert_eq!(
            next(Some(&lease("9", "cp-1", 30)), None, "cp-1", 0, 60),
            Next::Ours
        );
        // no duration on the object: the configured one
        let mut odd = lease("9", "cp-2", 30);
        odd.duration_secs = None;
        let seen = observe(None, &odd, 0);
        assert!(matches!(
            next(Some(&odd), Some(&seen), "cp-1", 59_999, 60),
            Next::Wait { .. }
        ));
    }
}
