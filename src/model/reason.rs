//! Why a room or a search ended, in the words the Node server's clients know.

use serde::{Serialize, Serializer};

/// Why a room or a search ended. On the wire each is the word the Node server sent
/// ([`Reason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// `partner-left`: the partner pressed *Next*.
    NextPartner,
    /// `partner-left`: the partner ended the chat (or was removed).
    UserEnded,
    /// `partner-left`: the partner's connection ended for good.
    Disconnect,
    /// `partner-left`: the partner's connection dropped and the room is held for it.
    ConnectionLost,
    /// `chat-ended`: the user's own `end-chat` closed its room.
    Ended,
    /// `chat-ended`: the user's own `end-chat` cancelled its search.
    SearchCancelled,
    /// `room-ended`: the room reached `MAX_ROOM_DURATION_MS`.
    MaxDuration,
    /// `room-ended`: told to a user who comes back after its partner left the room held for it.
    PartnerLeft,
}

impl Reason {
    /// The word on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::NextPartner => "next-partner",
            Reason::UserEnded => "user-ended",
            Reason::Disconnect => "disconnect",
            Reason::ConnectionLost => "connection-lost",
            Reason::Ended => "ended",
            Reason::SearchCancelled => "search-cancelled",
            Reason::MaxDuration => "max-duration",
            Reason::PartnerLeft => "partner-left",
        }
    }

    /// A `partner-left` reason another node sent. The words `next` and anything unknown come
    /// from nodes of earlier versions: a cluster upgraded node by node still understands them.
    pub(crate) fn from_peer(word: &str) -> Reason {
        match word {
            "next" | "next-partner" => Reason::NextPartner,
            "disconnect" => Reason::Disconnect,
            "connection-lost" => Reason::ConnectionLost,
            _ => Reason::UserEnded,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn a_peer_word_comes_back_as_itself() {
        for r in [
            Reason::NextPartner,
            Reason::UserEnded,
            Reason::Disconnect,
            Reason::ConnectionLost,
        ] {
            assert_eq!(Reason::from_peer(r.as_str()), r);
        }
        assert_eq!(Reason::from_peer("next"), Reason::NextPartner);
        assert_eq!(Reason::from_peer("whatever"), Reason::UserEnded);
    }
}
