//! `Member`: the node's presence in the control plane's actor cluster (ractor_cluster).
//! The node agent spawns one per node, named [`member_name`], in the process group
//! [`NODES_GROUP`]; once the node's session with the coordinator is up, the group is
//! shared with the coordinator, whose membership actor sees the member join (and
//! leave, when the session drops) and sends it [`MemberMsg::Reconcile`] when the
//! node's desired state changes. The member only nudges the node's `Heartbeat`
//! ([`heartbeat::reconcile_now`]): the desired state itself is read from NATS, so a
//! lost message costs nothing but the time to the next tick.
//!
//! [`MemberMsg`] is the only message type that crosses the actor cluster, and it
//! carries no data: job data never rides this channel.

use crate::heartbeat;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;

/// The process group (ractor's default scope) of every node's member; the
/// coordinator monitors it.
pub const NODES_GROUP: &str = "paddock.nodes";

const NAME_PREFIX: &str = "paddock-member-";
const RECONCILE: &str = "reconcile";

/// The name of `node`'s member actor, which is how the coordinator tells members apart.
pub fn member_name(node: &str) -> String {
    format!("{NAME_PREFIX}{node}")
}

/// The node a member actor stands for, from its name; `None` for any other actor.
pub fn member_node(actor_name: &str) -> Option<&str> {
    actor_name
        .strip_prefix(NAME_PREFIX)
        .filter(|node| paddock_contract::subjects::is_valid_token(node))
}

/// What the coordinator may ask of a node over the actor cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberMsg {
    /// Read the desired state again now (drain, cordon, undrain): the fast path.
    Reconcile,
}

/// Serialisable, so that the member is reachable from the coordinator: a cast with
/// the variant's name and no payload. A message this version does not know is
/// dropped by ractor (the next tick reconciles anyway).
impl ractor::Message for MemberMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let variant = match self {
            MemberMsg::Reconcile => RECONCILE,
        };
        Ok(SerializedMessage::Cast {
            variant: variant.to_string(),
            args: Vec::new(),
            metadata: None,
        })
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match message {
            SerializedMessage::Cast { variant, .. } if variant == RECONCILE => {
                Ok(MemberMsg::Reconcile)
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

/// Called on every `Reconcile` received (a metric, in the node agent).
pub type ReconcileObserver = Arc<dyn Fn() + Send + Sync>;

pub struct MemberArgs {
    pub node: String,
    pub on_reconcile: Option<ReconcileObserver>,
}

pub struct Member;

#[ractor::async_trait]
impl Actor for Member {
    type Msg = MemberMsg;
    type State = MemberArgs;
    type Arguments = MemberArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MemberArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Left automatically when the actor stops.
        ractor::pg::join(NODES_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MemberMsg::Reconcile => {
                if let Some(observe) = &state.on_reconcile {
                    observe();
                }
                if !heartbeat::reconcile_now(&state.node) {
                    tracing::debug!("reconcile asked while the heartbeat is not running");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::HeartbeatMsg;
    use ractor::Message as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn names_map_to_nodes_and_back() {
        assert_eq!(member_node(&member_name("mini-1")), Some("mini-1"));
        assert_eq!(member_node("heartbeat-mini-1"), None);
        assert_eq!(member_node("paddock-member-a.b"), None);
        assert_eq!(member_node("paddock-member-"), None);
    }

    #[test]
    fn reconcile_crosses_the_wire_and_nothing_else_does() {
        let wire = MemberMsg::Reconcile.serialize().expect("serialisable");
        assert_eq!(
            MemberMsg::deserialize(wire).expect("decodes"),
            MemberMsg::Reconcile
        );
        let unknown = SerializedMessage::Cast {
            variant: "format_disk".into(),
            args: Vec::new(),
            metadata: None,
        };
        assert!(MemberMsg::deserialize(unknown).is_err());
    }

    /// Stands in for the node's heartbeat: counts the nudges it gets.
    struct CountingHeartbeat(Arc<AtomicUsize>);

    #[ractor::async_trait]
    impl Actor for CountingHeartbeat {
        type Msg = HeartbeatMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            _message: Self::Msg,
            _state: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_member_joins_the_group_and_nudges_its_heartbeat() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let (beat, beat_handle) = Actor::spawn(
            Some(heartbeat::actor_name("member-test")),
            CountingHeartbeat(ticks.clone()),
            (),
        )
        .await
        .expect("heartbeat");
        let observed = Arc::new(AtomicUsize::new(0));
        let counter = observed.clone();
        let (member, member_handle) = Actor::spawn(
            Some(member_name("member-test")),
            Member,
            MemberArgs {
                node: "member-test".into(),
                on_reconcile: Some(Arc::new(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                })),
            },
        )
        .await
        .expect("member");
        let in_group = ractor::pg::get_members(&NODES_GROUP.to_string());
        assert!(in_group.iter().any(|cell| cell.get_id() == member.get_id()));

        member.cast(MemberMsg::Reconcile).expect("cast");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while ticks.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ticks.load(Ordering::SeqCst), 1);
        assert_eq!(observed.load(Ordering::SeqCst), 1);

        member.stop(None);
        member_handle.await.expect("member stopped");
        let in_group = ractor::pg::get_members(&NODES_GROUP.to_string());
        assert!(!in_group.iter().any(|cell| cell.get_id() == member.get_id()));
        beat.stop(None);
        beat_handle.await.expect("heartbeat stopped");
    }
}
