//! Whether the local etcd member may be stopped now without taking the cluster down.
//!
//! Restarting a static pod stops its container. For kube-apiserver, kube-controller-manager and
//! kube-scheduler that costs this node a few seconds; for etcd it costs the cluster a voting
//! member. A three-member cluster that already lost one member loses quorum — every write of
//! every API server stops — the moment a certificate renewal restarts a second one. So before a
//! node restarts its local etcd it asks that etcd who its members are, asks each of them whether
//! it is healthy, and goes ahead only when the members left running still make a quorum.
//!
//! Everything goes over etcd's own HTTPS client port (the gRPC gateway's JSON for the member
//! list, `/health` for each member) with the node's `etcd/healthcheck-client` certificate — the
//! one kubeadm makes for exactly this kind of probe — so no etcdctl and no gRPC client is
//! needed. The decision itself, [`judge`], is a pure function of what was seen, so every rule is
//! tested without a cluster.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::node::health::{self, ClientCert, Identity, Request, Target, Trust};

/// The gRPC gateway's path of `Cluster.MemberList` (etcd ≥ 3.4; 3.3 only had `/v3beta/...`,
/// and kubeadm has shipped etcd ≥ 3.4 since Kubernetes 1.17).
pub const MEMBER_LIST_PATH: &str = "/v3/cluster/member/list";

/// One member as etcd lists it, kept as etcd names it so messages match what `etcdctl member
/// list` shows the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member ID (etcd prints it in hex).
    pub id: u64,
    /// `--name`; empty for a member added but not started yet.
    pub name: String,
    /// `--initial-advertise-peer-urls`.
    pub peer_urls: Vec<String>,
    /// `--advertise-client-urls`; empty for a member added but not started yet.
    pub client_urls: Vec<String>,
    /// A learner (a joining member that does not vote yet, kubeadm's `EtcdLearnerMode`): it is
    /// not part of the quorum.
    pub is_learner: bool,
}

impl Member {
    /// Name and URL for messages: "cp-2 (https://10.0.0.2:2379)"; a member that never started
    /// has neither, so it is named by ID and peer URL, as `etcdctl member list` would show it.
    pub fn describe(&self) -> String {
        let url = self.client_urls.first().or(self.peer_urls.first());
        match (self.name.is_empty(), url) {
            (false, Some(url)) => format!("{} ({url})", self.name),
            (false, None) => self.name.clone(),
            (true, Some(url)) => format!("member {:x} ({url}, not started yet)", self.id),
            (true, None) => format!("member {:x} (not started yet)", self.id),
        }
    }

    /// The URL its health is asked at: the first https client URL (an http one would need no
    /// client certificate and prove nothing about the TLS the API servers use).
    fn health_url(&self) -> Option<&str> {
        self.client_urls
            .iter()
            .map(String::as_str)
            .find(|u| u.starts_with("https://"))
    }
}

/// The members of the local etcd's cluster, as the local member sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The member that answered (the response header's `member_id`): the one a restart of this
    /// node's etcd would stop.
    pub local_id: u64,
    /// The cluster ID, to tell clusters apart in messages.
    pub cluster_id: u64,
    /// Every member, learners included, in etcd's order.
    pub members: Vec<Member>,
    /// The local address that answered, reused to ask the local member's health (its
    /// advertised URL may be an address of the node that only other nodes route to).
    pub asked: Option<SocketAddr>,
}

impl Cluster {
    /// Reads the gateway's JSON answer to [`MEMBER_LIST_PATH`]. The gateway writes uint64 IDs
    /// as JSON strings (proto3 JSON) and omits fields at their default (`isLearner` when false,
    /// `name` and `clientURLs` of a member not started yet), so both spellings of an ID are
    /// accepted and a missing field means its default.
    pub fn from_json(body: &str) -> Result<Cluster, String> {
        let value: Value = serde_json::from_str(body.trim()).map_err(|e| {
            format!(
                "the member list is not JSON ({e}): {}",
                body.trim().chars().take(200).collect::<String>()
            )
        })?;
        let header = value
            .get("header")
            .ok_or("the member list has no \"header\"")?;
        let local_id = id_of(header.get("member_id"))
            .map_err(|e| format!("the member list's header.member_id {e}"))?;
        let cluster_id = id_of(header.get("cluster_id"))
            .map_err(|e| format!("the member list's header.cluster_id {e}"))?;
        let list = match value.get("members") {
            Some(Value::Array(list)) => list,
            Some(_) => return Err("the member list's \"members\" is not a list".into()),
            None => return Err("the member list has no \"members\"".into()),
        };
        let mut members = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            let id = id_of(m.get("ID")).map_err(|e| format!("members[{i}].ID {e}"))?;
            let urls = |key: &str| -> Result<Vec<String>, String> {
                match m.get(key) {
                    None | Some(Value::Null) => Ok(Vec::new()),
                    Some(Value::Array(urls)) => urls
                        .iter()
                        .map(|u| {
                            u.as_str()
                                .map(str::to_string)
                                .ok_or_else(|| format!("members[{i}].{key} holds a non-string"))
                        })
                        .collect(),
                    Some(_) => Err(format!("members[{i}].{key} is not a list")),
                }
            };
            members.push(Member {
                id,
                name: m
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                peer_urls: urls("peerURLs")?,
                client_urls: urls("clientURLs")?,
                is_learner: m.get("isLearner").and_then(Value::as_bool).unwrap_or(false),
            });
        }
        if members.is_empty() {
            return Err("the member list is empty".into());
        }
        Ok(Cluster {
            local_id,
            cluster_id,
            members,
            asked: None,
        })
    }
}

/// A uint64 of proto3 JSON: a decimal string, or (other encoders) a number.
fn id_of(value: Option<&Value>) -> Result<u64, String> {
    match value {
        Some(Value::String(s)) => s
            .parse::<u64>()
            .map_err(|_| format!("{s:?} is not a uint64")),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| format!("{n} is not a uint64")),
        Some(other) => Err(format!("{other} is not a uint64")),
        None => Err("is missing".into()),
    }
}

/// The healthcheck client's credentials and the etcd CA, read once for every request.
struct Credentials {
    ca_pem: Vec<u8>,
    ca_source: String,
    identity: Identity,
}

impl Credentials {
    /// kubeadm's `etcd/healthcheck-client` pair, trusted by etcd's `--trusted-ca-file`
    /// (`etcd/ca.crt`), which also signed every member's serving certificate.
    fn of_pki(pki: &Path) -> Result<Credentials, String> {
        let etcd = pki.join("etcd");
        let ca = etcd.join("ca.crt");
        let ca_pem = std::fs::read(&ca)
            .map_err(|e| format!("cannot read the etcd CA {}: {e}", ca.display()))?;
        let identity = Identity::from_files(ClientCert {
            cert: &etcd.join("healthcheck-client.crt"),
            key: &etcd.join("healthcheck-client.key"),
        })?;
        Ok(Credentials {
            ca_pem,
            ca_source: ca.display().to_string(),
            identity,
        })
    }

    fn call(
        &self,
        target: &Target,
        req: &Request<'_>,
        timeout: Duration,
    ) -> Result<health::Probe, String> {
        health::request(
            target,
            req,
            &Trust::Cas {
                pem: &self.ca_pem,
                source: &self.ca_source,
            },
            Some(&self.identity),
            timeout,
        )
    }
}

/// Asks the local etcd — the first of `addresses` (its `--listen-client-urls`) that answers —
/// for its member list, because only the member itself knows which cluster it belongs to and
/// who else votes in it (the manifest's `--initial-cluster` is history: members are added and
/// removed after bootstrap). The error names every address tried and what each said.
pub fn members(addresses: &[SocketAddr], pki: &Path, timeout: Duration) -> Result<Cluster, String> {
    let creds = Credentials::of_pki(pki)?;
    members_with(&creds, addresses, timeout)
}

fn members_with(
    creds: &Credentials,
    addresses: &[SocketAddr],
    timeout: Duration,
) -> Result<Cluster, String> {
    if addresses.is_empty() {
        return Err("no local etcd client address to ask".into());
    }
    let req = Request {
        method: "POST",
        path: MEMBER_LIST_PATH,
        json: Some(b"{}"),
    };
    let mut errors = Vec::new();
    for addr in addresses {
        let url = format!("https://{addr}{MEMBER_LIST_PATH}");
        match creds.call(&Target::ip(*addr), &req, timeout) {
            Ok(probe) if probe.status == 200 => {
                let mut cluster =
                    Cluster::from_json(&probe.body).map_err(|e| format!("{url}: {e}"))?;
                cluster.asked = Some(*addr);
                return Ok(cluster);
            }
            Ok(probe) => errors.push(format!(
                "{url}: HTTP {}: {}",
                probe.status,
                probe.body.trim().chars().take(200).collect::<String>()
            )),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// One member and whether it answered healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    /// The member.
    pub member: Member,
    /// Ok when `/health` said `"health":"true"`; otherwise what it answered or why it could not
    /// be asked, for the operator.
    pub health: Result<(), String>,
}

/// Every member's health, and which one is local: all [`judge`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    /// The member a restart of this node's etcd would stop.
    pub local_id: u64,
    /// Every member of the cluster, learners included.
    pub members: Vec<MemberHealth>,
}

/// Asks every member's `/health`, in parallel so one dead member costs one `timeout`, not one
/// per member. etcd's `/health` answers true only when the member sees a leader and a quorum
/// read through raft succeeds, so a healthy answer means the member is in the quorum now.
pub fn health_of(
    cluster: &Cluster,
    pki: &Path,
    timeout: Duration,
) -> Result<ClusterHealth, String> {
    let creds = Credentials::of_pki(pki)?;
    Ok(health_with(&creds, cluster, timeout))
}

fn health_with(creds: &Credentials, cluster: &Cluster, timeout: Duration) -> ClusterHealth {
    let ask = |member: &Member| -> Result<(), String> {
        let (targets, url) = match (member.id == cluster.local_id, cluster.asked) {
            (true, Some(addr)) => (vec![Target::ip(addr)], format!("https://{addr}/health")),
            _ => {
                let Some(base) = member.health_url() else {
                    return Err(if member.client_urls.is_empty() {
                        "it advertises no client URL (added but never started?)".to_string()
                    } else {
                        format!(
                            "it advertises no https client URL ({})",
                            member.client_urls.join(", ")
                        )
                    });
                };
                let base = base.trim_end_matches('/');
                (Target::of_url(base)?, format!("{base}/health"))
            }
        };
        let mut errors = Vec::new();
        for target in &targets {
            match creds.call(target, &Request::get("/health"), timeout) {
                Ok(p) if p.status == 200 && health::etcd_healthy(&p.body) => return Ok(()),
                Ok(p) => {
                    return Err(format!(
                        "{url} answered HTTP {}: {}",
                        p.status,
                        p.body.trim().chars().take(200).collect::<String>()
                    ));
                }
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        Err(errors.join("; "))
    };
    let members = std::thread::scope(|scope| {
        let running: Vec<_> = cluster
            .members
            .iter()
            .map(|m| (m, scope.spawn(move || ask(m))))
            .collect();
        running
            .into_iter()
            .map(|(m, handle)| MemberHealth {
                member: m.clone(),
                health: handle
                    .join()
                    .unwrap_or_else(|_| Err("the health probe panicked".into())),
            })
            .collect()
    });
    ClusterHealth {
        local_id: cluster.local_id,
        members,
    }
}

/// Whether the local member may be stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stopping it keeps the cluster available (or there is nothing to keep): `note` says why,
    /// for the restart's log.
    MayStop {
        /// E.g. "etcd: 3 members, all healthy; 2 of 3 keep quorum while this one restarts".
        note: String,
    },
    /// Stopping it now could take the cluster down, or its state is not known well enough to
    /// tell; the reason names the members concerned and what they answered.
    Refuse(String),
}

/// The rule, apart from any I/O so every case is tested: the local member may stop when every
/// other member is healthy and the healthy voting members left without it still make a quorum
/// (⌊n/2⌋+1 of the n voting members). A one-member cluster may always stop: it has no quorum to
/// protect, and its restart is the outage any one-member etcd has. Another member being
/// unhealthy refuses even when the quorum arithmetic would pass (five members, one down: 3 left,
/// 3 needed): a restart is planned work, and planned work waits until the cluster is whole
/// rather than use up its tolerance for the next unplanned failure. The local member's own
/// health does not decide — stopping an unhealthy member loses nothing — it is only reported.
/// Learners do not vote, so they are not counted in n, but an unhealthy learner still refuses:
/// it means a join is under way or failed, which an operator should see through first.
pub fn judge(cluster: &ClusterHealth) -> Verdict {
    let Some(local) = cluster
        .members
        .iter()
        .find(|m| m.member.id == cluster.local_id)
    else {
        return Verdict::Refuse(format!(
            "the local member {:x} is not in its own member list ({}); was it removed from the \
             cluster?",
            cluster.local_id,
            cluster
                .members
                .iter()
                .map(|m| m.member.describe())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let local_name = local.member.describe();
    if cluster.members.len() == 1 {
        return Verdict::MayStop {
            note: format!(
                "etcd: a single member ({local_name}), no quorum to protect; the cluster is \
                 unavailable while it restarts, as with any one-member etcd"
            ),
        };
    }
    let others: Vec<&MemberHealth> = cluster
        .members
        .iter()
        .filter(|m| m.member.id != cluster.local_id)
        .collect();
    let unhealthy: Vec<&MemberHealth> = others
        .iter()
        .copied()
        .filter(|m| m.health.is_err())
        .collect();
    let voters = cluster
        .members
        .iter()
        .filter(|m| !m.member.is_learner)
        .count();
    let quorum = voters / 2 + 1;
    let left: Vec<&MemberHealth> = others
        .iter()
        .copied()
        .filter(|m| !m.member.is_learner && m.health.is_ok())
        .collect();
    let left_names = || {
        if left.is_empty() {
            "none".to_string()
        } else {
            left.iter()
                .map(|m| m.member.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut reasons = Vec::new();
    for m in &unhealthy {
        let role = if m.member.is_learner { "learner " } else { "" };
        reasons.push(format!(
            "{role}{} is not healthy: {}",
            m.member.describe(),
            m.health
                .as_ref()
                .err()
                .map(String::as_str)
                .unwrap_or_default()
        ));
    }
    if left.len() < quorum {
        let mut why = format!(
            "{voters} voting members need {quorum} for quorum, and only {} healthy would be left \
             ({}) while {local_name} restarts",
            left.len(),
            left_names()
        );
        if voters == 2 && unhealthy.is_empty() {
            why.push_str(
                ": a two-member cluster loses quorum whenever either member stops, so its etcd \
                 can only be restarted in a maintenance window that accepts the outage (or after \
                 adding a third member)",
            );
        }
        reasons.push(why);
    } else if !unhealthy.is_empty() {
        reasons.push(format!(
            "{} of {voters} would keep quorum ({quorum} needed), but a planned restart waits \
             until every member is healthy again",
            left.len()
        ));
    }
    if !reasons.is_empty() {
        if let Err(e) = &local.health {
            reasons.push(format!("{local_name} itself is not healthy either: {e}"));
        }
        return Verdict::Refuse(reasons.join("; "));
    }
    let mut note = format!("etcd: {} members", cluster.members.len());
    let learners = cluster.members.len() - voters;
    if learners > 0 {
        let _ = write!(note, " ({voters} voting, {learners} learner)");
    }
    match &local.health {
        Ok(()) => note.push_str(", all healthy"),
        Err(e) => {
            let _ = write!(
                note,
                ", all healthy but this one ({local_name}: {e}), which the restart may mend"
            );
        }
    }
    let _ = write!(
        note,
        "; {} of {voters} keep quorum ({quorum} needed) while this one restarts",
        left.len()
    );
    Verdict::MayStop { note }
}

/// The check a node runs before it restarts its local etcd: Ok with a note for the log when the
/// cluster keeps quorum without it; Err starting "refusing to restart etcd:" otherwise, naming
/// the member at fault and what it answered, because the operator reading it must know which
/// machine to look at. `addresses` are the local member's client addresses (as
/// [`crate::node::restart::HealthCheck::Etcd`] holds them); `timeout` bounds each request, and
/// the member probes run in parallel, so the whole check takes about two `timeout`s at most.
///
/// When the local member does not answer at all, this refuses too. It looks as if stopping a
/// member that does not answer could lose nothing, but "does not answer our HTTPS" is not "does
/// not vote": an etcd whose client port rejects us (a served certificate already expired, a
/// listener wedged) may still take part in raft over its peer port, and without its member
/// list we know neither the cluster's size nor the other members' health — in a three-member
/// cluster with one member already down, stopping it would end the quorum. Even a one-member
/// cluster cannot be told apart from that without an answer. The message says so, so the
/// operator can look at the member and restart it by hand when they know it is safe.
pub fn may_stop_local(
    addresses: &[SocketAddr],
    pki: &Path,
    timeout: Duration,
) -> Result<String, String> {
    let refuse = |why: String| format!("refusing to restart etcd: {why}");
    let creds = Credentials::of_pki(pki).map_err(|e| {
        refuse(format!(
            "cannot read the credentials to ask the cluster whether it can spare this member: {e}"
        ))
    })?;
    let cluster = members_with(&creds, addresses, timeout).map_err(|e| {
        refuse(format!(
            "the local member does not answer its member list ({e}), so the cluster's size and \
             the other members' health are unknown; it may still vote over its peer port, and \
             stopping it could end the quorum. Check it (etcdctl endpoint status --cluster) and \
             restart it by hand once that is known to be safe"
        ))
    })?;
    match judge(&health_with(&creds, &cluster, timeout)) {
        Verdict::MayStop { note } => Ok(note),
        Verdict::Refuse(why) => Err(refuse(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://10.0.0.{id}:2380")],
            client_urls: vec![format!("https://10.0.0.{id}:2379")],
            is_learner: false,
        }
    }

    /// A cluster of `n` members named cp-1.. with member 1 local; `down` lists the unhealthy.
    fn cluster(n: u64, down: &[u64]) -> ClusterHealth {
        ClusterHealth {
            local_id: 1,
            members: (1..=n)
                .map(|id| MemberHealth {
                    member: member(id, &format!("cp-{id}")),
                    health: if down.contains(&id) {
                        Err(format!(
                            "https://10.0.0.{id}:2379/health: connection refused"
                        ))
                    } else {
                        Ok(())
                    },
                })
                .collect(),
        }
    }

    fn may_stop(c: &ClusterHealth) -> String {
        match judge(c) {
            Verdict::MayStop { note } => note,
            Verdict::Refuse(why) => panic!("refused: {why}"),
        }
    }

    fn refused(c: &ClusterHealth) -> String {
        match judge(c) {
            Verdict::Refuse(why) => why,
            Verdict::MayStop { note } => panic!("allowed: {note}"),
        }
    }

    #[test]
    fn a_single_member_may_always_stop() {
        let note = may_stop(&cluster(1, &[]));
        assert!(note.contains("single member"), "{note}");
        assert!(note.contains("cp-1"), "{note}");
        let note = may_stop(&cluster(1, &[1]));
        assert!(note.contains("single member"), "{note}");
    }

    #[test]
    fn two_members_can_never_spare_one() {
        let why = refused(&cluster(2, &[]));
        assert!(why.contains("2 voting members need 2 for quorum"), "{why}");
        assert!(why.contains("only 1 healthy would be left (cp-2)"), "{why}");
        assert!(why.contains("two-member cluster"), "{why}");
        let why = refused(&cluster(2, &[2]));
        assert!(
            why.contains("cp-2 (https://10.0.0.2:2379) is not healthy"),
            "{why}"
        );
        assert!(why.contains("only 0 healthy would be left (none)"), "{why}");
        assert!(!why.contains("two-member cluster loses"), "{why}");
    }

    #[test]
    fn three_members_spare_one_only_when_the_others_are_healthy() {
        let note = may_stop(&cluster(3, &[]));
        assert_eq!(
            note,
            "etcd: 3 members, all healthy; 2 of 3 keep quorum (2 needed) while this one restarts"
        );
        let why = refused(&cluster(3, &[3]));
        assert!(
            why.contains(
                "cp-3 (https://10.0.0.3:2379) is not healthy: \
                 https://10.0.0.3:2379/health: connection refused"
            ),
            "{why}"
        );
        assert!(why.contains("3 voting members need 2 for quorum"), "{why}");
        assert!(why.contains("only 1 healthy would be left (cp-2)"), "{why}");
        assert!(
            !why.contains("cp-2 (https"),
            "a healthy member is not blamed: {why}"
        );
    }

    #[test]
    fn an_unhealthy_local_member_loses_nothing_by_stopping() {
        let note = may_stop(&cluster(3, &[1]));
        assert!(
            note.contains("but this one (cp-1 (https://10.0.0.1:2379)"),
            "{note}"
        );
        assert!(note.contains("2 of 3 keep quorum"), "{note}");
        // ...but it does not make an unhealthy other member acceptable.
        let why = refused(&cluster(3, &[1, 2]));
        assert!(
            why.contains("cp-2 (https://10.0.0.2:2379) is not healthy"),
            "{why}"
        );
        assert!(
            !why.contains("cp-1 (https://10.0.0.1:2379) is not healthy"),
            "{why}"
        );
        assert!(
            why.ends_with(
                "cp-1 (https://10.0.0.1:2379) itself is not healthy either: \
                 https://10.0.0.1:2379/health: connection refused"
            ),
            "{why}"
        );
    }

    #[test]
    fn five_members_refuse_any_unhealthy_other_even_with_quorum_to_spare() {
        let note = may_stop(&cluster(5, &[]));
        assert!(
            note.contains("5 members, all healthy; 4 of 5 keep quorum (3 needed)"),
            "{note}"
        );
        let why = refused(&cluster(5, &[4]));
        assert!(
            why.contains("cp-4 (https://10.0.0.4:2379) is not healthy"),
            "{why}"
        );
        assert!(why.contains("3 of 5 would keep quorum (3 needed)"), "{why}");
        let why = refused(&cluster(5, &[4, 5]));
        assert!(why.contains("cp-4") && why.contains("cp-5"), "{why}");
        assert!(why.contains("5 voting members need 3 for quorum"), "{why}");
        assert!(
            why.contains("only 2 healthy would be left (cp-2, cp-3)"),
            "{why}"
        );
    }

    #[test]
    fn learners_do_not_count_towards_quorum() {
        // cp-1, cp-2 voting, cp-3 a healthy learner: stopping cp-1 leaves 1 of 2 voters.
        let mut c = cluster(3, &[]);
        c.members[2].member.is_learner = true;
        let why = refused(&c);
        assert!(why.contains("2 voting members need 2 for quorum"), "{why}");
        // Four members, one a learner: 3 voters, 2 left.
        let mut c = cluster(4, &[]);
        c.members[3].member.is_learner = true;
        let note = may_stop(&c);
        assert!(note.contains("4 members (3 voting, 1 learner)"), "{note}");
        assert!(note.contains("2 of 3 keep quorum (2 needed)"), "{note}");
        // An unhealthy learner refuses: a join is under way or failed.
        let mut c = cluster(4, &[4]);
        c.members[3].member.is_learner = true;
        let why = refused(&c);
        assert!(why.contains("learner cp-4"), "{why}");
    }

    #[test]
    fn a_member_never_started_is_named_by_id_and_counts() {
        let mut c = cluster(3, &[]);
        c.members[2].member = Member {
            id: 0xabc,
            name: String::new(),
            peer_urls: vec!["https://10.0.0.3:2380".into()],
            client_urls: vec![],
            is_learner: false,
        };
        c.members[2].health = Err("it advertises no client URL (added but never started?)".into());
        let why = refused(&c);
        assert!(
            why.contains("member abc (https://10.0.0.3:2380, not started yet) is not healthy"),
            "{why}"
        );
        assert!(why.contains("3 voting members need 2"), "{why}");
    }

    #[test]
    fn a_local_member_missing_from_its_list_refuses() {
        let mut c = cluster(3, &[]);
        c.local_id = 99;
        let why = refused(&c);
        assert!(
            why.contains("local member 63 is not in its own member list"),
            "{why}"
        );
    }

    /// The answer of Debian's etcd 3.4.23 to `POST /v3/cluster/member/list` `{}`, from the
    /// three-member cluster of tests/etcd_cluster.rs (captured while writing it).
    /// Members come sorted by ID, not by name; IDs are decimal strings; `isLearner` is absent
    /// when false.
    const REAL_MEMBER_LIST: &str = r#"{"header":{"cluster_id":"16206507808754999504","member_id":"1249686851503161459","raft_term":"2"},"members":[{"ID":"1249686851503161459","name":"cp-1","peerURLs":["https://127.0.0.11:41727"],"clientURLs":["https://127.0.0.11:38007"]},{"ID":"5929482117450758431","name":"cp-3","peerURLs":["https://127.0.0.13:34513"],"clientURLs":["https://127.0.0.13:45471"]},{"ID":"17999836208082904327","name":"cp-2","peerURLs":["https://127.0.0.12:41869"],"clientURLs":["https://127.0.0.12:41247"]}]}"#;

    #[test]
    fn parses_a_real_member_list() {
        let c = Cluster::from_json(REAL_MEMBER_LIST).unwrap();
        assert_eq!(c.local_id, 1249686851503161459);
        assert_eq!(c.cluster_id, 16206507808754999504);
        assert_eq!(c.asked, None);
        let m = |id: u64, name: &str, peer: &str, client: &str| Member {
            id,
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: vec![client.into()],
            is_learner: false,
        };
        assert_eq!(
            c.members,
            [
                m(
                    1249686851503161459,
                    "cp-1",
                    "https://127.0.0.11:41727",
                    "https://127.0.0.11:38007"
                ),
                m(
                    5929482117450758431,
                    "cp-3",
                    "https://127.0.0.13:34513",
                    "https://127.0.0.13:45471"
                ),
                m(
                    17999836208082904327,
                    "cp-2",
                    "https://127.0.0.12:41869",
                    "https://127.0.0.12:41247"
                ),
            ]
        );
        // etcdctl prints IDs in hex; so do the messages.
        assert_eq!(format!("{:x}", c.members[1].id), "5249c091f0aef91f");
        assert_eq!(c.members[2].describe(), "cp-2 (https://127.0.0.12:41247)");
    }

    #[test]
    fn member_list_variants_and_garbage() {
        // Numbers instead of strings, a learner, a member not started yet (no name, no client
        // URLs: the gateway omits default fields).
        let c = Cluster::from_json(
            r#"{"header":{"cluster_id":7,"member_id":"2"},"members":[
                {"ID":"1","name":"a","peerURLs":["https://h:2380"],"clientURLs":["https://h:2379"]},
                {"ID":2,"name":"b","peerURLs":["https://i:2380"],"clientURLs":["http://i:2379","https://i:2379"],"isLearner":true},
                {"ID":"18446744073709551615","peerURLs":["https://j:2380"]}]}"#,
        )
        .unwrap();
        assert_eq!((c.local_id, c.cluster_id), (2, 7));
        assert!(c.members[1].is_learner && !c.members[0].is_learner);
        assert_eq!(c.members[1].health_url(), Some("https://i:2379"));
        assert_eq!(c.members[2].id, u64::MAX);
        assert_eq!(c.members[2].name, "");
        assert!(c.members[2].client_urls.is_empty());
        assert_eq!(c.members[2].health_url(), None);

        for (body, expected) in [
            ("", "not JSON"),
            ("<html>", "not JSON"),
            (r#"{"members":[]}"#, "no \"header\""),
            (
                r#"{"header":{"cluster_id":"1"},"members":[]}"#,
                "member_id is missing",
            ),
            (
                r#"{"header":{"cluster_id":"1","member_id":"-3"},"members":[]}"#,
                "\"-3\" is not a uint64",
            ),
            (
                r#"{"header":{"cluster_id":"1","member_id":"3"}}"#,
                "no \"members\"",
            ),
            (
                r#"{"header":{"cluster_id":"1","member_id":"3"},"members":[]}"#,
                "member list is empty",
            ),
            (
                r#"{"header":{"cluster_id":"1","member_id":"3"},"members":[{"name":"x"}]}"#,
                "members[0].ID is missing",
            ),
            (
                r#"{"header":{"cluster_id":"1","member_id":"3"},"members":[{"ID":"3","clientURLs":"https://x"}]}"#,
                "members[0].clientURLs is not a list",
            ),
        ] {
            let err = Cluster::from_json(body).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
