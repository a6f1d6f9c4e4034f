//! The in-process bus: the embedded default. Subscribers inside the host (and tests) receive
//! every published message through a broadcast channel.

use tokio::sync::broadcast;

use super::{Bus, BusError, Message};

/// How many messages a slow in-process subscriber may lag behind before it misses some (it is
/// told how many through `RecvError::Lagged`; the outbox still has them for replay).
const CAPACITY: usize = 4096;

/// An in-process broadcast bus.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    sender: broadcast::Sender<Message>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl MemoryBus {
    /// A new bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Receives every message published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.sender.subscribe()
    }
}

#[async_trait::async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        // No subscriber is not an error: the outbox keeps the event either way.
        let _ = self.sender.send(message.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_receive_published_messages() {
        let bus = MemoryBus::new();
        let mut receiver = bus.subscribe();
        let message = Message {
            event_id: "e1".into(),
            subject: "events.t.deal.won".into(),
            body: "{}".into(),
        };
        bus.publish(&message).await.unwrap();
        assert_eq!(receiver.recv().await.unwrap(), message);
    }
}
