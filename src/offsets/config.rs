//! Settings of a [`Consumer`](super::Consumer).

use std::time::Duration;

use crate::error::{Error, Result};

use super::assignor::AssignorKind;
use super::encoding::MAX_GROUP_ID_BYTES;

/// Where a consumer starts in a partition for which its group has no
/// committed offset, or whose committed offset (or position) is no longer in
/// the partition (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// At the first offset still stored (the log start offset).
    Earliest,
    /// At the end: only records appended from now on are read.
    #[default]
    Latest,
    /// Nowhere: the consumer reports [`Error::NoCommittedOffset`] (no
    /// commit) or [`Error::OffsetOutOfRange`] (a position outside the
    /// partition) until the application seeks.
    None,
}

/// Settings of a [`Consumer`](super::Consumer); build with
/// [`ConsumerConfig::new`] and the chainable setters of the same names.
///
/// ```
/// use std::time::Duration;
/// use durable_log::offsets::{AutoOffsetReset, ConsumerConfig};
///
/// let config = ConsumerConfig::new("billing")
///     .auto_commit(false)
///     .auto_offset_reset(AutoOffsetReset::Earliest)
///     .max_poll_records(100);
/// assert_eq!(config.group_id, "billing");
/// assert_eq!(config.auto_commit_interval, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// The consumer group whose committed offsets the consumer reads and
    /// writes: 1 to 255 bytes.
    pub group_id: String,
    /// Commit the positions on its own: at the first poll after each
    /// `auto_commit_interval`, when partitions are taken away, and on
    /// close. See the [module documentation](super) for what this
    /// guarantees.
    ///
    /// Default: `true` (as Kafka's `enable.auto.commit`).
    pub auto_commit: bool,
    /// How often auto-commit commits. Zero commits at every poll.
    ///
    /// Default: 5 s.
    pub auto_commit_interval: Duration,
    /// Where to start without a usable committed offset.
    ///
    /// Default: [`AutoOffsetReset::Latest`].
    pub auto_offset_reset: AutoOffsetReset,
    /// Most records one poll returns; at least 1.
    ///
    /// Default: 500.
    pub max_poll_records: usize,
    /// The static identity of a consumer subscribed to a group (Kafka's
    /// `group.instance.id`): 1 to 255 bytes, unique in the group, the same
    /// across restarts of the process. A static member that restarts within
    /// the group's session timeout gets its partitions back without a
    /// rebalance; it does not leave the group when it closes. `None` for a
    /// dynamic member, which leaves the group when it closes.
    ///
    /// Default: `None`.
    pub group_instance_id: Option<String>,
    /// How often a subscribed consumer's polls tell the group coordinator
    /// that it is alive, and how soon a waiting poll notices a rebalance.
    /// A consumer uses at most a third of the coordinator's session timeout.
    /// Every poll also heartbeats once when it starts. Must not be zero.
    ///
    /// Default: 3 s (as Kafka's `heartbeat.interval.ms`).
    pub heartbeat_interval: Duration,
    /// The prefix of the member id the group coordinator gives this consumer
    /// (Kafka's `client.id`): at most 255 bytes; the coordinator uses
    /// `consumer` when it is empty.
    ///
    /// Default: empty.
    pub client_id: String,
    /// The assignor a subscribed consumer asks its group to use. The first
    /// member of a group chooses; a consumer asking for another one than the
    /// group's is refused with [`Error::InconsistentGroupProtocol`]. `None`
    /// accepts the group's (or the coordinator's default).
    ///
    /// Default: `None`.
    pub assignor: Option<AssignorKind>,
}

impl ConsumerConfig {
    /// The defaults, for the consumer group `group_id`.
    pub fn new(group_id: impl Into<String>) -> ConsumerConfig {
        ConsumerConfig {
            group_id: group_id.into(),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            auto_offset_reset: AutoOffsetReset::Latest,
            max_poll_records: 500,
            group_instance_id: None,
            heartbeat_interval: Duration::from_secs(3),
            client_id: String::new(),
            assignor: None,
        }
    }

    /// Sets [`ConsumerConfig::group_instance_id`], making the consumer a
    /// static member of the groups it subscribes to.
    #[must_use]
    pub fn group_instance_id(mut self, group_instance_id: impl Into<String>) -> Self {
        self.group_instance_id = Some(group_instance_id.into());
        self
    }

    /// Sets [`ConsumerConfig::client_id`].
    #[must_use]
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Sets [`ConsumerConfig::assignor`].
    #[must_use]
    pub fn assignor(mut self, assignor: AssignorKind) -> Self {
        self.assignor = Some(assignor);
        self
    }

    /// Checks every field; the error names the first invalid one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an empty or too long `group_id`, a zero
    /// `max_poll_records`, an empty or too long `group_instance_id`, a zero
    /// `heartbeat_interval` or a too long `client_id`.
    pub fn validate(&self) -> Result<()> {
        check_group_id(&self.group_id)?;
        if self.max_poll_records == 0 {
            return Err(Error::config("max_poll_records", "must be at least 1"));
        }
        if let Some(instance) = &self.group_instance_id
            && (instance.is_empty() || instance.len() > MAX_GROUP_ID_BYTES)
        {
            return Err(Error::config(
                "group_instance_id",
                format!(
                    "must be 1 to {MAX_GROUP_ID_BYTES} bytes, not {}",
                    instance.len()
                ),
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(Error::config("heartbeat_interval", "must not be zero"));
        }
        if self.client_id.len() > MAX_GROUP_ID_BYTES {
            return Err(Error::config(
                "client_id",
                format!(
                    "must be at most {MAX_GROUP_ID_BYTES} bytes, not {}",
                    self.client_id.len()
                ),
            ));
        }
        Ok(())
    }
}

/// Refuses a group id the offset store cannot key.
pub(crate) fn check_group_id(group_id: &str) -> Result<()> {
    if group_id.is_empty() || group_id.len() > MAX_GROUP_ID_BYTES {
        return Err(Error::config(
            "group_id",
            format!(
                "must be 1 to {MAX_GROUP_ID_BYTES} bytes, not {}",
                group_id.len()
            ),
        ));
    }
    Ok(())
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl ConsumerConfig {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`ConsumerConfig::auto_commit`].
    auto_commit: bool;
    /// Sets [`ConsumerConfig::auto_commit_interval`].
    auto_commit_interval: Duration;
    /// Sets [`ConsumerConfig::auto_offset_reset`].
    auto_offset_reset: AutoOffsetReset;
    /// Sets [`ConsumerConfig::max_poll_records`].
    max_poll_records: usize;
    /// Sets [`ConsumerConfig::heartbeat_interval`].
    heartbeat_interval: Duration;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_fields_are_named() {
        let field = |config: ConsumerConfig| match config.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        assert_eq!(field(ConsumerConfig::new("")), "group_id");
        assert_eq!(field(ConsumerConfig::new("g".repeat(256))), "group_id");
        assert_eq!(
            field(ConsumerConfig::new("g").max_poll_records(0)),
            "max_poll_records"
        );
        assert_eq!(
            field(ConsumerConfig::new("g").group_instance_id("")),
            "group_instance_id"
        );
        assert_eq!(
            field(ConsumerConfig::new("g").group_instance_id("i".repeat(256))),
            "group_instance_id"
        );
        assert_eq!(
            field(ConsumerConfig::new("g").heartbeat_interval(Duration::ZERO)),
            "heartbeat_interval"
        );
        assert_eq!(
            field(ConsumerConfig::new("g").client_id("c".repeat(256))),
            "client_id"
        );
        assert!(ConsumerConfig::new("g".repeat(255)).validate().is_ok());
        let static_member = ConsumerConfig::new("g")
            .group_instance_id("i".repeat(255))
            .client_id("c".repeat(255))
            .assignor(AssignorKind::CooperativeSticky);
        assert!(static_member.validate().is_ok());
    }
}
