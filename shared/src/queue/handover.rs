//! A worker's attempt ends and its room goes to the next job in one round trip: the finish of
//! one job and the claim of the next are sent together. Each is still its own script, as
//! [`Queue::finish`] and [`Queue::claim`] run them (fencing, fairness and priorities are theirs);
//! what goes is a round trip per job: Redis reads one request and writes one reply instead of
//! two each, and the job's `ended` and the next one's `running` events reach every server in
//! one write.

use std::time::Duration;

use redis::Value;

use super::Queue;
use super::claim::{Claim, Claimant};
use super::finish::{Finished, Outcome};
use super::lease::Lease;
use super::library::{Call, Reply};
use crate::clock::Millis;
use crate::connection::Conn;
use crate::job::QueueName;
use crate::{Error, Result};

/// The claim sent with a finish: which queue, who with how much room (the room the finished
/// attempt leaves included), and the claim's clock (`0`: Redis's).
pub struct NextClaim<'a> {
    /// The queue to claim from.
    pub queue: QueueName,
    /// The worker and its room once the attempt's holds are free.
    pub who: Claimant<'a>,
    /// The lease clock ([`crate::clock::REDIS_TIME`] in production).
    pub at: Millis,
}

/// What a finish sent with a claim got: each answers apart, so a claimed job is never lost to
/// a failed finish (the worker records its result again on its own, and runs the new job).
#[derive(Debug)]
pub struct Handover {
    /// The finish's answer, as [`Queue::finish`] gives it.
    pub finished: Result<Finished>,
    /// The claim's answer, as [`Queue::claim`] gives it.
    pub next: Result<Claim>,
}

impl Queue {
    /// [`Queue::finish`] of `lease`, and [`Queue::claim`] for `next`, in one round trip when the
    /// job is in the shard the worker claims from first (always, unsharded); in two otherwise.
    /// `Err` only when neither was answered (the claim may then have run unseen, as a claim
    /// whose reply is lost: its lease lapses and the job is handed out again).
    pub async fn finish_and_claim(
        &self,
        lease: &Lease,
        outcome: &Outcome,
        retention: Duration,
        now: Millis,
        next: &NextClaim<'_>,
    ) -> Result<Handover> {
        if self.shard_of(lease.job.as_str()) != self.home_of(next.who.worker) {
            return Ok(Handover {
                finished: self.finish(lease, outcome, retention, now).await,
                next: self.claim(next.queue, &next.who, next.at).await,
            });
        }
        let this = self.for_job(&lease.job);
        let finish = this.finish_call(lease, outcome, retention, now);
        let claim = this.claim_call(next.queue, &next.who, next.at);
        let mut conn = this.conn().await?;
        let job = lease.job.as_str();
        // A recorded result is confirmed as the durability asks right after the finish, in the
        // same pipeline (`Queue::send_confirmed`); the claim comes after the confirmation.
        let (replies, confirmation) = match this.wait_for(&mut conn).await? {
            None => {
                // (errors come back as values, each for its own call: one failing does not hide
                // the other)
                let replies: Vec<Value> = redis::pipe()
                    .ignore_errors()
                    .add_command(finish.cmd())
                    .add_command(claim.cmd())
                    .query_async(&mut conn)
                    .await?;
                (replies, Ok(()))
            }
            Some(wait) => this.send_confirmed(wait, &finish, Some(&claim), &mut conn).await?,
        };
        let mut replies = replies.into_iter();
        let finished = match answer::<i64>(replies.next(), &finish, &mut conn, job).await {
            Ok(r) if r.value != 1 => Ok(Self::finished(r.value)),
            Ok(r) => match r.resent {
                true => this.confirm(&mut conn).await,
                false => confirmation,
            }
            .map(|()| Self::finished(r.value)),
            Err(e) => Err(e),
        };
        let claimed = answer::<Vec<Value>>(replies.next(), &claim, &mut conn, job).await;
        let claimed = this.claimed(next.queue, &next.who, claimed.map(|r| r.value));
        let claimed = match self.shard_count() {
            1 => claimed,
            _ => self.claim_past_home(next.queue, &next.who, next.at, claimed).await,
        };
        Ok(Handover {
            finished,
            next: claimed,
        })
    }
}

/// One call's reply out of the pipeline ([`Call::reply`]: a call refused because Redis lost its
/// function, a restart without persistence or a primary that never had the library, is sent
/// again alone, loading it). (A finish sent again runs after the claim sent with it: the next
/// job's `running` event comes before this one's end, that once.)
async fn answer<T: redis::FromRedisValue>(
    reply: Option<Value>,
    call: &Call,
    conn: &mut Conn,
    job: &str,
) -> Result<Reply<T>> {
    let reply = reply.ok_or_else(|| Error::Corrupt {
        job: job.to_string(),
        why: "its finish and the next claim, sent together, got fewer replies".into(),
    })?;
    Ok(call.reply(reply, conn).await?)
}
