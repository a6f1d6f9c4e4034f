//! The health monitor: every tick, each node assesses every connection, records the result
//! and raises or resolves alerts. Nodes need not agree on who does it: the store keeps one
//! open alert per connection and rule, and records one assessment of a connection at a time.
//!
//! Refused signatures are counted in memory (a request that fails its signature writes
//! nothing, so a flood of forged requests cannot flood the database) and added to the store,
//! per connection and minute, at the start of each tick.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::{Assessment, HealthRules, Thresholds, assess};
use crate::pipeline::Host;
use crate::store::{self, Activity, AlertChanges, Connection, ConnectionStatus, HealthRecord};

/// How the monitor paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// Time between two passes over every connection.
    pub tick: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(30),
        }
    }
}

/// Signature failures this node counted since the last tick, by connection.
#[derive(Debug, Default)]
pub struct SignatureCounts(Mutex<HashMap<String, u64>>);

impl SignatureCounts {
    /// Counts one refused signature of `connection_id`.
    pub fn add(&self, connection_id: &str) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match counts.get_mut(connection_id) {
            Some(count) => *count += 1,
            None => {
                counts.insert(connection_id.to_owned(), 1);
            }
        }
    }

    fn take(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts counts back that could not be stored (they are added at the next tick).
    fn put_back(&self, counts: HashMap<String, u64>) {
        let mut mine = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (connection, count) in counts {
            *mine.entry(connection).or_default() += count;
        }
    }
}

/// A connection's assessment with what it was computed from.
#[derive(Debug, Clone)]
pub struct Assessed {
    /// The conclusion.
    pub assessment: Assessment,
    /// The figures.
    pub activity: Activity,
    /// The thresholds applied.
    pub thresholds: Thresholds,
    /// When.
    pub at: store::Millis,
}

/// Connections read per page of a pass.
const PAGE: usize = 200;
/// Signature failure minutes are kept this long (the longest window is a day).
const SIGNATURE_MINUTES_KEPT: store::Millis = 2 * 86_400_000;

impl Host {
    /// Assesses every connection each tick until `shutdown`.
    pub async fn run_health_monitor(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let tick = self.settings().health.tick;
        loop {
            if let Err(error) = self.assess_all().await {
                tracing::error!(%error, "a health pass failed");
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// One pass: stores the signature failures counted, assesses every connection, records
    /// each assessment and raises or resolves its alerts. What changed, over all connections.
    pub async fn assess_all(&self) -> store::Result<AlertChanges> {
        self.flush_signature_failures().await?;
        let mut rules: HashMap<String, HealthRules> = HashMap::new();
        let mut changes = AlertChanges::default();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store()
                .connections_after(after.as_deref(), PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for connection in &page {
                if !rules.contains_key(&connection.tenant_id) {
                    let tenant_rules = self.health_rules(&connection.tenant_id).await?;
                    rules.insert(connection.tenant_id.clone(), tenant_rules);
                }
                let tenant_rules = &rules[&connection.tenant_id];
                match self.record_assessment(connection, tenant_rules).await {
                    Ok(changed) => {
                        changes.raised.extend(changed.raised);
                        changes.resolved.extend(changed.resolved);
                    }
                    Err(error) => tracing::error!(
                        connection = %connection.id, %error, "assessing a connection failed"
                    ),
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        if changes.appended() {
            self.outbox_appended().notify_one();
        }
        for alert in &changes.raised {
            tracing::warn!(
                tenant = %alert.tenant_id, connection = %alert.connection_id, rule = %alert.rule,
                severity = %alert.severity, detail = %alert.detail, "integration alert raised"
            );
        }
        for alert in &changes.resolved {
            tracing::info!(
                tenant = %alert.tenant_id, connection = %alert.connection_id, rule = %alert.rule,
                "integration alert resolved"
            );
        }
        Ok(changes)
    }

    /// The tenant's health rules; stored ones that no longer read (they were checked when
    /// written) give way to the defaults, with an error logged.
    pub async fn health_rules(&self, tenant_id: &str) -> store::Result<HealthRules> {
        let stored = self.store().health_rules(tenant_id).await?;
        Ok(
            HealthRules::from_stored(stored.as_deref()).unwrap_or_else(|error| {
                tracing::error!(tenant = %tenant_id, %error, "stored health rules do not read; using the defaults");
                HealthRules::default()
            }),
        )
    }

    /// Assesses `connection` now, without recording anything.
    pub async fn assess_connection(
        &self,
        connection: &Connection,
        rules: &HealthRules,
    ) -> store::Result<Assessed> {
        let thresholds = rules
            .for_connection(&connection.id)
            .unwrap_or_else(|_| rules.defaults.clone());
        let now = store::now_millis();
        let window = i64::try_from(thresholds.window_secs).unwrap_or(i64::MAX) * 1000;
        let activity = self
            .store()
            .connection_activity(&connection.id, now - window)
            .await?;
        Ok(Assessed {
            assessment: assess(connection, &activity, &thresholds, now),
            activity,
            thresholds,
            at: now,
        })
    }

    async fn record_assessment(
        &self,
        connection: &Connection,
        rules: &HealthRules,
    ) -> store::Result<AlertChanges> {
        let assessed = self.assess_connection(connection, rules).await?;
        let realert_after =
            i64::try_from(assessed.thresholds.realert_after_secs).unwrap_or(i64::MAX) * 1000;
        self.store()
            .record_health(HealthRecord {
                connection_id: connection.id.clone(),
                tenant_id: connection.tenant_id.clone(),
                org_id: connection.org_id.clone(),
                provider: connection.provider.clone(),
                status: assessed.assessment.status.as_str().to_owned(),
                reasons_json: assessed.assessment.reasons_json(),
                firing: assessed.assessment.firing(),
                raise: connection.status == ConnectionStatus::Active,
                realert_after,
                now: assessed.at,
            })
            .await
    }

    /// Counts a refused signature of `connection_id` (stored at the next tick).
    pub fn count_signature_failure(&self, connection_id: &str) {
        self.signature_counts().add(connection_id);
    }

    async fn flush_signature_failures(&self) -> store::Result<()> {
        let counts = self.signature_counts().take();
        if counts.is_empty() {
            return Ok(());
        }
        let now = store::now_millis();
        let minute = now - now.rem_euclid(60_000);
        let rows = counts
            .iter()
            .map(|(connection, count)| (connection.clone(), minute, *count))
            .collect();
        let stored = self
            .store()
            .add_signature_failures(rows, now - SIGNATURE_MINUTES_KEPT)
            .await;
        if stored.is_err() {
            self.signature_counts().put_back(counts);
        }
        stored
    }
}
