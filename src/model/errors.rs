//! The stable error codes clients branch on.

use serde::Serialize;

/// A machine-readable reason sent as `code` in `error` and `auth-error` events.
/// The string forms are part of the protocol: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// An event other than `authenticate` arrived before `authenticate` succeeded.
    NotAuthenticated,
    /// The payload is not of the event's shape (wrong type, missing field, value out of range).
    InvalidPayload,
    /// The payload is larger than the event allows.
    PayloadTooLarge,
    /// The event name is not part of the protocol.
    UnknownEvent,
    /// Binary attachments are not part of this protocol.
    BinaryNotSupported,
    /// The sender is not in the room it named, or the target is not its partner.
    NotInRoom,
    /// `find-random-partner` while already in a room: send `next-partner` or `end-chat` first.
    AlreadyInRoom,
    /// The requested user id is connected on another socket.
    UserIdTaken,
    /// This socket already authenticated as another user.
    AlreadyAuthenticated,
    /// The partner's connection could not take the message (its send buffer is full).
    DeliveryFailed,
    /// The server is shutting down and accepts no new searches.
    ShuttingDown,
    /// The partner's connection dropped; the room is held while it may come back.
    PartnerAway,
    /// Another connection took this session over with its `resumeToken`; this one is closed.
    SessionReplaced,
    /// Too many events (or connections) in too short a time; `retryAfterMs` says when to retry.
    RateLimited,
    /// A token is required (`JWT_SECRET` / `JWT_PUBLIC_KEY` is set) and none was given.
    TokenRequired,
    /// The token has expired.
    TokenExpired,
    /// The token's signature, algorithm or shape is wrong.
    TokenInvalid,
    /// The token was issued for another audience or by another issuer.
    TokenWrongAudience,
    /// The user (or its address) is banned; `until` says until when.
    Banned,
}

impl ErrorCode {
    /// Every code (the labels of `roulette_errors_total`, exported from the start).
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::NotAuthenticated,
        ErrorCode::InvalidPayload,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnknownEvent,
        ErrorCode::BinaryNotSupported,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyInRoom,
        ErrorCode::UserIdTaken,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::DeliveryFailed,
        ErrorCode::ShuttingDown,
        ErrorCode::PartnerAway,
        ErrorCode::SessionReplaced,
        ErrorCode::RateLimited,
        ErrorCode::TokenRequired,
        ErrorCode::TokenExpired,
        ErrorCode::TokenInvalid,
        ErrorCode::TokenWrongAudience,
        ErrorCode::Banned,
    ];

    /// The wire form, e.g. `"not-in-room"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotAuthenticated => "not-authenticated",
            ErrorCode::InvalidPayload => "invalid-payload",
            ErrorCode::PayloadTooLarge => "payload-too-large",
            ErrorCode::UnknownEvent => "unknown-event",
            ErrorCode::BinaryNotSupported => "binary-not-supported",
            ErrorCode::NotInRoom => "not-in-room",
            ErrorCode::AlreadyInRoom => "already-in-room",
            ErrorCode::UserIdTaken => "user-id-taken",
            ErrorCode::AlreadyAuthenticated => "already-authenticated",
            ErrorCode::DeliveryFailed => "delivery-failed",
            ErrorCode::ShuttingDown => "shutting-down",
            ErrorCode::PartnerAway => "partner-away",
            ErrorCode::SessionReplaced => "session-replaced",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::TokenRequired => "token-required",
            ErrorCode::TokenExpired => "token-expired",
            ErrorCode::TokenInvalid => "token-invalid",
            ErrorCode::TokenWrongAudience => "token-wrong-audience",
            ErrorCode::Banned => "banned",
        }
    }

    /// Whether this refusal of `authenticate` is about identity, and so goes out as `auth-error`
    /// (the event clients already listen to) rather than `error`.
    pub fn is_auth_failure(self) -> bool {
        matches!(
            self,
            ErrorCode::UserIdTaken
                | ErrorCode::AlreadyAuthenticated
                | ErrorCode::TokenRequired
                | ErrorCode::TokenExpired
                | ErrorCode::TokenInvalid
                | ErrorCode::TokenWrongAudience
                | ErrorCode::Banned
        )
    }

    /// A default human-readable explanation, used when no more specific one is given.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::NotAuthenticated => "send 'authenticate' first",
            ErrorCode::InvalidPayload => "the payload does not have the expected shape",
            ErrorCode::PayloadTooLarge => "the payload is too large",
            ErrorCode::UnknownEvent => "this event is not part of the protocol",
            ErrorCode::BinaryNotSupported => "binary attachments are not accepted",
            ErrorCode::NotInRoom => "you are not in that room, or that user is not your partner",
            ErrorCode::AlreadyInRoom => {
                "you are in a room: send 'next-partner' or 'end-chat' first"
            }
            ErrorCode::UserIdTaken => "that user id is connected elsewhere",
            ErrorCode::AlreadyAuthenticated => "this connection is authenticated as another user",
            ErrorCode::DeliveryFailed => "your partner's connection is not keeping up",
            ErrorCode::ShuttingDown => "the server is shutting down",
            ErrorCode::PartnerAway => {
                "your partner lost its connection; it may come back in a few seconds"
            }
            ErrorCode::SessionReplaced => "this session was resumed on another connection",
            ErrorCode::RateLimited => "too many requests; slow down",
            ErrorCode::TokenRequired => "this server requires a token",
            ErrorCode::TokenExpired => "the token has expired",
            ErrorCode::TokenInvalid => "the token is not valid",
            ErrorCode::TokenWrongAudience => "the token was issued for another audience",
            ErrorCode::Banned => "you are banned from this service",
        }
    }
}

/// A refusal: the code plus the message shown to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong, for a human.
    pub message: String,
    /// For [`ErrorCode::RateLimited`]: how long until the next attempt can succeed.
    pub retry_after_ms: Option<u64>,
    /// For [`ErrorCode::Banned`]: until when, ms since the epoch.
    pub until: Option<u64>,
}

impl Reject {
    /// A refusal with a specific message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Reject {
            code,
            message: message.into(),
            retry_after_ms: None,
            until: None,
        }
    }

    /// A [`ErrorCode::RateLimited`] refusal that says when to retry.
    pub fn rate_limited(what: &str, retry_after: std::time::Duration) -> Self {
        let ms = retry_after.as_millis().max(1) as u64;
        Reject {
            code: ErrorCode::RateLimited,
            message: format!("too many {what}; retry in {ms} ms"),
            retry_after_ms: Some(ms),
            until: None,
        }
    }

    /// A [`ErrorCode::Banned`] refusal: the ban's reason, and until when.
    pub(crate) fn banned(reason: &str, until: u64) -> Self {
        Reject {
            code: ErrorCode::Banned,
            message: format!("you are banned: {}", crate::echo::clip_to(reason, 200)),
            retry_after_ms: None,
            until: Some(until),
        }
    }

    /// Shorthand for [`ErrorCode::InvalidPayload`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Reject::new(ErrorCode::InvalidPayload, message)
    }
}

impl From<ErrorCode> for Reject {
    fn from(code: ErrorCode) -> Self {
        Reject::new(code, code.default_message())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode::{self, *};

    #[test]
    fn all_lists_every_code_once() {
        // No wildcard: a new code does not compile here until it has its place in `ALL`, so
        // its counter is exported from the start too.
        let index = |c: ErrorCode| match c {
            NotAuthenticated => 0,
            InvalidPayload => 1,
            PayloadTooLarge => 2,
            UnknownEvent => 3,
            BinaryNotSupported => 4,
            NotInRoom => 5,
            AlreadyInRoom => 6,
            UserIdTaken => 7,
            AlreadyAuthenticated => 8,
            DeliveryFailed => 9,
            ShuttingDown => 10,
            PartnerAway => 11,
            SessionReplaced => 12,
            RateLimited => 13,
            TokenRequired => 14,
            TokenExpired => 15,
            TokenInvalid => 16,
            TokenWrongAudience => 17,
            Banned => 18,
        };
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(index(code), i, "{code:?}");
        }
    }
}
