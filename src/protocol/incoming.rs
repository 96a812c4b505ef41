//! Client → server payloads: parsed into typed structs, then validated.
//!
//! Unknown fields are ignored (clients may send more than we read); a known field of the wrong
//! type, a missing required field, or a value out of range is an [`ErrorCode::InvalidPayload`].

use super::clip;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::model::call::{ConnectionState, Quality, QualityStats};
use crate::model::profile::{
    Gender, GenderWish, MAX_LANGUAGES, Preferences, Profile, country_code, language_code,
    normalise_interests,
};
use crate::model::{ErrorCode, Reject};

/// Longest accepted user id, in bytes.
pub(crate) const MAX_USER_ID_BYTES: usize = 64;
/// Longest accepted room id, in bytes (ours are 32; anything longer cannot be a room).
pub(crate) const MAX_ROOM_ID_BYTES: usize = 64;
/// Longest chat message, in characters.
pub(crate) const MAX_CHAT_CHARS: usize = 2000;
/// Longest chat `type`, in bytes.
pub(crate) const MAX_CHAT_TYPE_BYTES: usize = 32;
/// Largest relayed WebRTC body (offer, answer or candidate), in bytes of JSON.
pub(crate) const MAX_SIGNAL_BYTES: usize = 32 * 1024;
/// Longest token (JWT or resume token), in bytes.
pub(crate) const MAX_TOKEN_BYTES: usize = 4096;

/// Parses an event's payload. `None` (no payload, or `null`) yields `T::default()` when the event's
/// payload is optional, and an error otherwise.
pub(crate) fn parse<T: DeserializeOwned + Default>(
    raw: Option<&RawValue>,
    required: bool,
) -> Result<T, Reject> {
    match raw {
        Some(raw) if raw.get() != "null" => serde_json::from_str(raw.get())
            .map_err(|e| Reject::invalid(format!("invalid payload: {}", clip(&e.to_string())))),
        _ if required => Err(Reject::invalid("this event needs an object payload")),
        _ => Ok(T::default()),
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), Reject> {
    if value.len() > max {
        return Err(Reject::new(
            ErrorCode::PayloadTooLarge,
            format!("{field} may have at most {max} bytes"),
        ));
    }
    Ok(())
}

/// Checks a client-chosen user id: 1 to 64 bytes of letters, digits and `_-.:@`.
pub(crate) fn check_user_id(id: &str) -> Result<(), Reject> {
    check_len("userId", id, MAX_USER_ID_BYTES)?;
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Reject::invalid(
            "userId must be 1-64 characters of letters, digits and _-.:@",
        ))
    }
}

/// `userInfo` as sent in `authenticate`: the profile fields, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserInfoIn {
    /// `male` | `female` | `other`.
    pub gender: Option<Gender>,
    /// Age in years.
    pub age: Option<u8>,
    /// ISO 639-1 codes.
    #[serde(default)]
    pub languages: Vec<String>,
    /// ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
}

impl UserInfoIn {
    /// Validates and normalises into a [`Profile`].
    pub(crate) fn into_profile(self) -> Result<Profile, Reject> {
        if self.languages.len() > MAX_LANGUAGES {
            return Err(Reject::invalid(format!(
                "at most {MAX_LANGUAGES} languages are allowed"
            )));
        }
        let mut languages = Vec::with_capacity(self.languages.len());
        for l in &self.languages {
            let code = language_code(l).map_err(|e| Reject::invalid(e.0))?;
            if !languages.contains(&code) {
                languages.push(code);
            }
        }
        let country = match self.country.as_deref() {
            Some(c) => Some(country_code(c).map_err(|e| Reject::invalid(e.0))?),
            None => None,
        };
        Ok(Profile {
            gender: self.gender,
            age: self.age,
            languages,
            country,
        })
    }
}

/// `authenticate {userId?, userInfo?, token?, resumeToken?}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthenticateIn {
    /// The id the client wants; a random one is assigned when absent.
    pub user_id: Option<String>,
    /// The user's profile.
    pub user_info: Option<UserInfoIn>,
    /// A JWT, when the server requires one.
    pub token: Option<String>,
    /// The token from an earlier `authenticated`, to resume that session.
    pub resume_token: Option<String>,
}

impl AuthenticateIn {
    /// Checks every field's bounds.
    pub(crate) fn validate(&self) -> Result<(), Reject> {
        if let Some(id) = &self.user_id {
            check_user_id(id)?;
        }
        for (field, tok) in [("token", &self.token), ("resumeToken", &self.resume_token)] {
            if let Some(tok) = tok {
                check_len(field, tok, MAX_TOKEN_BYTES)?;
            }
        }
        Ok(())
    }
}

/// Preferences as sent in `find-random-partner`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreferencesIn {
    /// ISO 639-1 code the partner must speak.
    pub language: Option<String>,
    /// `male` | `female` | `any`.
    pub gender: Option<GenderWish>,
    /// `[min, max]` age of the partner.
    pub age_range: Option<(u8, u8)>,
    /// ISO 3166-1 alpha-2 code of the partner's country.
    pub country: Option<String>,
    /// Interest tags.
    #[serde(default)]
    pub interests: Vec<String>,
}

impl PreferencesIn {
    /// Validates and normalises into [`Preferences`].
    pub(crate) fn into_preferences(self) -> Result<Preferences, Reject> {
        let language = match self.language.as_deref() {
            Some(l) => Some(language_code(l).map_err(|e| Reject::invalid(e.0))?),
            None => None,
        };
        let country = match self.country.as_deref() {
            Some(c) => Some(country_code(c).map_err(|e| Reject::invalid(e.0))?),
            None => None,
        };
        if let Some((lo, hi)) = self.age_range
            && lo > hi
        {
            return Err(Reject::invalid(
                "ageRange must be [min, max] with min <= max",
            ));
        }
        let interests = normalise_interests(&self.interests).map_err(|e| Reject::invalid(e.0))?;
        Ok(Preferences {
            language,
            gender: self.gender.unwrap_or_default(),
            age_range: self.age_range,
            country,
            interests,
        })
    }
}

/// `find-random-partner {preferences?}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FindIn {
    /// What the user asks of a partner; the last ones sent are kept when absent.
    pub preferences: Option<PreferencesIn>,
}

/// The fields every relayed event carries.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Addressed {
    /// The room the sender believes it is in.
    pub room_id: String,
    /// The partner the sender addresses, when it says.
    pub target_user_id: Option<String>,
}

impl Addressed {
    fn validate(&self) -> Result<(), Reject> {
        check_len("roomId", &self.room_id, MAX_ROOM_ID_BYTES)?;
        if let Some(t) = &self.target_user_id {
            check_len("targetUserId", t, MAX_USER_ID_BYTES)?;
        }
        Ok(())
    }
}

/// `webrtc-offer`, `webrtc-answer` or `webrtc-ice-candidate`: `{roomId, <body>, targetUserId?}`,
/// where the body field (`offer`, `answer` or `candidate`) is relayed byte for byte.
#[derive(Debug)]
pub(crate) struct SignalIn {
    /// Room and target.
    pub to: Addressed,
    /// The untouched JSON of the body field.
    pub body: Box<RawValue>,
}

impl SignalIn {
    /// Parses a signal whose body lives in `field`. The body must be present (it may be `null`
    /// only for candidates, where `null` means "end of candidates").
    pub(crate) fn parse(raw: Option<&RawValue>, field: &'static str) -> Result<SignalIn, Reject> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            room_id: String,
            target_user_id: Option<String>,
            #[serde(borrow, default, deserialize_with = "present")]
            offer: Option<&'a RawValue>,
            #[serde(borrow, default, deserialize_with = "present")]
            answer: Option<&'a RawValue>,
            #[serde(borrow, default, deserialize_with = "present")]
            candidate: Option<&'a RawValue>,
        }
        let raw = raw
            .filter(|r| r.get() != "null")
            .ok_or_else(|| Reject::invalid("this event needs an object payload"))?;
        let wire: Wire<'_> = serde_json::from_str(raw.get())
            .map_err(|e| Reject::invalid(format!("invalid payload: {}", clip(&e.to_string()))))?;
        let body = match field {
            "offer" => wire.offer,
            "answer" => wire.answer,
            _ => wire.candidate,
        }
        .ok_or_else(|| Reject::invalid(format!("missing field `{field}`")))?;
        if field != "candidate" && !body.get().starts_with('{') {
            return Err(Reject::invalid(format!("`{field}` must be an object")));
        }
        check_len(field, body.get(), MAX_SIGNAL_BYTES)?;
        let to = Addressed {
            room_id: wire.room_id,
            target_user_id: wire.target_user_id,
        };
        to.validate()?;
        Ok(SignalIn {
            to,
            body: body.to_owned(),
        })
    }
}

/// Keeps a present `null` as `Some("null")`, unlike `Option`'s default, so that a candidate of
/// `null` (end of candidates) is told apart from a missing one.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// `chat-message {roomId, message, type?}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChatIn {
    /// Room and target.
    #[serde(flatten)]
    pub to: Addressed,
    /// The text.
    pub message: String,
    /// What kind of message (`text` when absent).
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

impl ChatIn {
    /// Checks the room fields and the message's bounds.
    pub(crate) fn validate(&self) -> Result<(), Reject> {
        self.to.validate()?;
        if self.message.trim().is_empty() {
            return Err(Reject::invalid("message must not be empty"));
        }
        if self.message.chars().count() > MAX_CHAT_CHARS {
            return Err(Reject::new(
                ErrorCode::PayloadTooLarge,
                format!("message may have at most {MAX_CHAT_CHARS} characters"),
            ));
        }
        if let Some(kind) = &self.kind {
            check_len("type", kind, MAX_CHAT_TYPE_BYTES)?;
        }
        Ok(())
    }
}

/// Longest `reason` of a report, in characters.
pub(crate) const MAX_REASON_CHARS: usize = 500;

/// `block-user {userId}` and `report-user {userId, reason}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ModerationIn {
    /// The user to keep away.
    pub user_id: String,
    /// Why (reports only).
    pub reason: Option<String>,
}

impl ModerationIn {
    /// Checks the id and the reason's length.
    pub(crate) fn validate(&self) -> Result<(), Reject> {
        check_user_id(&self.user_id)?;
        if let Some(r) = &self.reason
            && r.chars().count() > MAX_REASON_CHARS
        {
            return Err(Reject::new(
                ErrorCode::PayloadTooLarge,
                format!("reason may have at most {MAX_REASON_CHARS} characters"),
            ));
        }
        Ok(())
    }
}

/// `quality-report {roomId, quality, stats}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QualityReportIn {
    /// Room and target.
    #[serde(flatten)]
    pub to: Addressed,
    /// The client's own grade.
    pub quality: Option<Quality>,
    /// The raw numbers.
    #[serde(default)]
    pub stats: QualityStats,
}

impl QualityReportIn {
    /// Checks the room fields and the numbers.
    pub(crate) fn validate(&self) -> Result<(), Reject> {
        self.to.validate()?;
        self.stats.validate()
    }
}

/// `connection-status {roomId, status, quality?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConnectionStatusIn {
    /// Room and target.
    #[serde(flatten)]
    pub to: Addressed,
    /// The connection state.
    pub status: ConnectionState,
    /// The client's grade, if it has one.
    pub quality: Option<Quality>,
}

impl Default for ConnectionStatusIn {
    fn default() -> Self {
        ConnectionStatusIn {
            to: Addressed::default(),
            status: ConnectionState::Connecting,
            quality: None,
        }
    }
}

/// `typing {roomId, isTyping}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TypingIn {
    /// Room and target.
    #[serde(flatten)]
    pub to: Addressed,
    /// Whether the user is typing now.
    pub is_typing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn optional_payloads_accept_null_and_absence() {
        let f: FindIn = parse(None, false).unwrap();
        assert!(f.preferences.is_none());
        let f: FindIn = parse(Some(&raw("null")), false).unwrap();
        assert!(f.preferences.is_none());
        assert!(parse::<FindIn>(Some(&raw("42")), false).is_err());
    }

    #[test]
    fn required_payloads_refuse_null() {
        let e = parse::<ChatIn>(Some(&raw("null")), true).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPayload);
    }

    #[test]
    fn signal_body_is_kept_byte_for_byte() {
        let body = r#"{"type":"offer","sdp":"v=0\r\n a=\"x\""}"#;
        let payload = format!(r#"{{"roomId":"r1","offer":{body},"targetUserId":"bob"}}"#);
        let s = SignalIn::parse(Some(&raw(&payload)), "offer").unwrap();
        assert_eq!(s.body.get(), body);
        assert_eq!(s.to.room_id, "r1");
        assert_eq!(s.to.target_user_id.as_deref(), Some("bob"));
        assert!(SignalIn::parse(Some(&raw(r#"{"roomId":"r1"}"#)), "offer").is_err());
        assert!(SignalIn::parse(Some(&raw(r#"{"roomId":"r1","offer":"x"}"#)), "offer").is_err());
        let end = SignalIn::parse(
            Some(&raw(r#"{"roomId":"r1","candidate":null}"#)),
            "candidate",
        );
        assert_eq!(end.unwrap().body.get(), "null");
    }

    #[test]
    fn oversized_signal_is_refused() {
        let sdp = "a".repeat(MAX_SIGNAL_BYTES);
        let payload = format!(r#"{{"roomId":"r1","offer":{{"sdp":"{sdp}"}}}}"#);
        let e = SignalIn::parse(Some(&raw(&payload)), "offer").unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn user_ids_are_bounded() {
        assert!(check_user_id("alice_01@x.y").is_ok());
        assert!(check_user_id("").is_err());
        assert!(check_user_id("a b").is_err());
        assert!(check_user_id(&"a".repeat(65)).is_err());
    }

    #[test]
    fn preferences_are_normalised() {
        let p: PreferencesIn = serde_json::from_str(
            r#"{"language":"EN","gender":"female","ageRange":[20,30],"interests":[" Music","music"]}"#,
        )
        .unwrap();
        let p = p.into_preferences().unwrap();
        assert_eq!(p.language.as_deref(), Some("en"));
        assert_eq!(p.gender, GenderWish::Female);
        assert_eq!(p.interests, vec!["music"]);
        let bad: PreferencesIn = serde_json::from_str(r#"{"ageRange":[30,20]}"#).unwrap();
        assert!(bad.into_preferences().is_err());
    }

    #[test]
    fn quality_numbers_must_be_sane() {
        let q: QualityReportIn =
            serde_json::from_str(r#"{"roomId":"r","quality":"good","stats":{"packetLoss":150}}"#)
                .unwrap();
        assert!(q.validate().is_err());
        let q: QualityReportIn =
            serde_json::from_str(r#"{"roomId":"r","stats":{"latency":-1}}"#).unwrap();
        assert!(q.validate().is_err());
    }
}
