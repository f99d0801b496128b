//! The alert sender: its own tasks, never the event loop. The machine writes each alert to the
//! outbox (one row per recipient) in the commit of its event, and its effect wakes the sender,
//! which reads the new undelivered rows (all of them at start: what a crash left) and hands
//! each to its recipient's task. A recipient's task folds a storm (rate.rs), reads the tail of
//! stderr, delivers with retries that back off from 1 s to 5 min, and once delivered marks the
//! rows through the loop, so they are never sent again. Recipients are independent: one dead
//! sink holds up no other.

mod deliver;
mod message;
mod rate;

pub use deliver::SmtpSetupError;

use crate::dispatch::Connections;
use crate::inbox::Handle;
use crate::machine::{Event, Recipient};
use crate::store::{Reader, Undelivered};
use common::alerts::{AlertKind, AlertsSection};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Wakes the sender when the outbox has new rows (the loop's `Effect::Alerts`). A wake that
/// comes while the sender is busy is kept, so none is lost.
#[derive(Clone, Default)]
pub(crate) struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// How the sender delivers.
pub(crate) struct Sender {
    mailer: Option<deliver::Mailer>,
    agent: ureq::Agent,
    window: Duration,
    connections: Connections,
    handle: Handle,
}

/// Checks `[alerts]` the way herzog uses it (the SMTP settings, the password file): what a
/// start with it would fail on, said before anything starts.
pub fn check(section: &AlertsSection) -> Result<(), SmtpSetupError> {
    if let Some(smtp) = &section.smtp {
        deliver::Mailer::new(smtp)?;
    }
    Ok(())
}

/// Starts the sender; it runs until herzog stops.
pub(crate) fn spawn(
    section: &AlertsSection,
    db: PathBuf,
    handle: Handle,
    connections: Connections,
    outbox: Outbox,
) -> Result<(), SmtpSetupError> {
    let mailer = section.smtp.as_ref().map(deliver::Mailer::new).transpose()?;
    let sender = Arc::new(Sender {
        mailer,
        agent: deliver::agent(),
        window: section.rate_window,
        connections,
        handle,
    });
    tokio::spawn(run(sender, db, outbox));
    Ok(())
}

/// Reads what the outbox holds past what was read, each time it is woken, and hands each row to
/// its recipient's task.
async fn run(sender: Arc<Sender>, db: PathBuf, outbox: Outbox) {
    let mut last = 0;
    let mut recipients: HashMap<Recipient, mpsc::UnboundedSender<Undelivered>> = HashMap::new();
    loop {
        let path = db.clone();
        let read = tokio::task::spawn_blocking(move || Reader::open(&path)?.undelivered_alerts(last)).await;
        match read {
            Ok(Ok(rows)) => {
                for row in rows {
                    last = last.max(row.id);
                    let to = row.recipient.clone();
                    let row = match recipients.get(&to) {
                        Some(tx) => match tx.send(row) {
                            Ok(()) => continue,
                            // Its task ended, idle.
                            Err(mpsc::error::SendError(row)) => row,
                        },
                        None => row,
                    };
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(recipient(sender.clone(), to.clone(), rx));
                    let _ = tx.send(row);
                    recipients.insert(to, tx);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "failed to read the alert outbox: trying again in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed to read the alert outbox: trying again in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        }
        // Forget the tasks that ended, idle.
        recipients.retain(|_, tx| !tx.is_closed());
        outbox.wake.notified().await;
    }
}

/// How long a recipient's task waits with nothing held and no window open before it ends
/// (a project's own webhook is not kept for ever).
const IDLE: Duration = Duration::from_secs(600);

/// Milliseconds on a monotonic clock since `origin`.
fn ms(origin: tokio::time::Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One recipient's deliveries, in order, a message at a time.
async fn recipient(sender: Arc<Sender>, to: Recipient, mut rx: mpsc::UnboundedReceiver<Undelivered>) {
    let origin = tokio::time::Instant::now();
    let mut groups: rate::Groups<(AlertKind, String), Undelivered> = rate::Groups::new(sender.window);
    let key = |row: &Undelivered| (row.alert.kind, row.alert.subject().to_string());
    // Whether rows may still come: once not, the task ends when it holds none.
    let mut open = true;
    loop {
        if let Some(batch) = groups.take_due(ms(origin)) {
            let newest = batch.items.last().expect("a batch holds at least one");
            let stderr = deliver::tail(&newest.alert.stderr, &sender.connections).await;
            let message = message::Message::new(&batch.items, stderr);
            // Deliver, taking in what comes meanwhile (it waits for a later message).
            let mut tries = 0u32;
            loop {
                tries += 1;
                let sent = match &to {
                    Recipient::Email(address) => match &sender.mailer {
                        Some(mailer) => mailer.send(address, &message).await,
                        None => Err(deliver::DeliveryError::NoSmtp { to: address.clone() }),
                    },
                    Recipient::Webhook(url) => deliver::post(&sender.agent, url, &message).await,
                };
                match sent {
                    Ok(()) => break,
                    Err(e) => {
                        let wait = rate::backoff(tries);
                        tracing::warn!(error = %e, alert = %message.id, tries, retry_in_s = wait.as_secs(), "alert delivery failed: retrying");
                        let until = tokio::time::Instant::now() + wait;
                        loop {
                            tokio::select! {
                                () = tokio::time::sleep_until(until) => break,
                                row = rx.recv(), if open => match row {
                                    Some(row) => groups.add(key(&row), row),
                                    None => open = false,
                                },
                            }
                        }
                    }
                }
            }
            tracing::info!(alert = %message.id, kind = %message.alert.kind, to = %to.shown(), folded = message.folded, "alert delivered");
            groups.sent(&batch.key, ms(origin));
            let delivered = Event::AlertsDelivered {
                ids: message.rows.clone(),
            };
            if let Err(e) = sender.handle.event(delivered).await {
                // Sent again after a restart: the sink sees the id twice.
                tracing::info!(error = %e, alert = %message.id, "alert delivered but not recorded as such");
            }
            continue;
        }
        let due = groups.next_due();
        if !open && due.is_none() {
            return;
        }
        tokio::select! {
            row = rx.recv(), if open => match row {
                Some(row) => groups.add(key(&row), row),
                None => open = false,
            },
            () = tokio::time::sleep_until(origin + Duration::from_millis(due.unwrap_or(0))), if due.is_some() => {}
            () = tokio::time::sleep(IDLE), if due.is_none() => {
                if groups.is_idle(ms(origin)) {
                    // No more rows may come in; one that came meanwhile is still delivered
                    // here (and a later one by a new task).
                    rx.close();
                    while let Ok(row) = rx.try_recv() {
                        groups.add(key(&row), row);
                    }
                    open = false;
                }
            }
        }
    }
}
