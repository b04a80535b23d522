//! `Claimer`: pulls jobs from the queue only while the node has a free slot and is not
//! draining. Slots are permits of a semaphore owned by the node supervisor: the claimer
//! takes as many free permits as there are, asks the queue for at most that many jobs
//! (a pull sized to the free slots, never a prefetching stream whose buffered messages
//! would time out while they wait), and hands each job to the supervisor with its
//! permit. A permit returns when its session ends.

use crate::ports::JobFeed;
use crate::supervisor::NodeMsg;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct ClaimerArgs {
    pub feed: Arc<dyn JobFeed>,
    pub supervisor: ActorRef<NodeMsg>,
    pub slots: Arc<Semaphore>,
    /// True while the node must not claim (draining or cordoned).
    pub paused: watch::Receiver<bool>,
    pub shutdown: CancellationToken,
}

pub enum ClaimerMsg {
    /// The claim loop ended on its own: fail, so the supervisor restarts the claimer.
    LoopEnded(String),
}

impl ractor::Message for ClaimerMsg {}

pub struct ClaimerState {
    task: JoinHandle<()>,
}

impl Drop for ClaimerState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Claimer;

#[ractor::async_trait]
impl Actor for Claimer {
    type Msg = ClaimerMsg;
    type State = ClaimerState;
    type Arguments = ClaimerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ClaimerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let task = tokio::spawn(async move {
            let shutdown = args.shutdown.clone();
            let result = claim_loop(args).await;
            if !shutdown.is_cancelled() {
                let _ = myself.cast(ClaimerMsg::LoopEnded(result));
            }
        });
        Ok(ClaimerState { task })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ClaimerMsg::LoopEnded(reason) => Err(format!("claim loop ended: {reason}").into()),
        }
    }
}

async fn claim_loop(mut args: ClaimerArgs) -> String {
    let mut failures: u32 = 0;
    loop {
        // Wait until claiming is allowed.
        while *args.paused.borrow() {
            tokio::select! {
                changed = args.paused.changed() => if changed.is_err() { return "pause signal closed".into() },
                _ = args.shutdown.cancelled() => return "shutdown".into(),
            }
        }
        let first = tokio::select! {
            permit = args.slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return "slots closed".into(),
            },
            _ = args.shutdown.cancelled() => return "shutdown".into(),
            _ = args.paused.changed() => continue,
        };
        let mut permits = vec![first];
        while let Ok(permit) = args.slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        // Not cancelled mid-fetch: a fetch abandoned halfway would strand delivered
        // messages until their ack wait runs out. Fetches are short instead.
        match args.feed.fetch(permits.len()).await {
            Ok(jobs) => {
                failures = 0;
                for job in jobs {
                    let Some(permit) = permits.pop() else {
                        // The feed returned more than asked: give the extra back.
                        let _ = job.message.nak().await;
                        continue;
                    };
                    if args.shutdown.is_cancelled() || *args.paused.borrow() {
                        let _ = job.message.nak().await;
                        continue;
                    }
                    if let Err(ractor::MessagingErr::SendErr(NodeMsg::Claimed(job, _))) =
                        args.supervisor.cast(NodeMsg::Claimed(job, permit))
                    {
                        tracing::warn!("supervisor gone; giving the job back");
                        let _ = job.message.nak().await;
                        return "supervisor gone".into();
                    }
                }
            }
            Err(e) => {
                failures += 1;
                let wait = crate::policy::backoff(
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                    failures,
                );
                tracing::warn!(error = %e, ?wait, "claiming jobs failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = args.shutdown.cancelled() => return "shutdown".into(),
                }
            }
        }
    }
}
