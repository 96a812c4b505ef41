//! Who a user is ([`Profile`]) and whom they want to meet ([`Preferences`]).
//!
//! Both arrive from clients as JSON, so every constructor here normalises and bounds its input:
//! the matchmaker may then trust them without re-checking.

use serde::{Deserialize, Serialize};

/// Most interest tags a search may carry; more would make the interest index a memory lever.
pub(crate) const MAX_INTERESTS: usize = 10;
/// Longest interest tag, in characters, after trimming.
pub(crate) const MAX_INTEREST_CHARS: usize = 32;
/// Most languages a profile may list.
pub(crate) const MAX_LANGUAGES: usize = 10;

/// A user's own gender, as stated in `authenticate.userInfo.gender`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    /// Male.
    Male,
    /// Female.
    Female,
    /// Anything else, or not willing to say which.
    Other,
}

/// The gender a user wants their partner to have (`find-random-partner.preferences.gender`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenderWish {
    /// Only partners whose profile says `male`.
    Male,
    /// Only partners whose profile says `female`.
    Female,
    /// No wish: the default.
    #[default]
    Any,
}

/// A user's self-description. Every field is optional; an absent field never satisfies a wish about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The user's gender.
    pub gender: Option<Gender>,
    /// The user's age in years.
    pub age: Option<u8>,
    /// ISO 639-1 codes, lower-case, deduplicated.
    pub languages: Vec<String>,
    /// ISO 3166-1 alpha-2 code, upper-case.
    pub country: Option<String>,
}

/// What a searching user asks of a partner. Hard filters (`language`, `gender`, `age_range`,
/// `country`) must hold both ways; `interests` only rank otherwise compatible partners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    /// The partner must list this ISO 639-1 code among their languages.
    pub language: Option<String>,
    /// The partner's gender.
    pub gender: GenderWish,
    /// Inclusive bounds on the partner's age.
    pub age_range: Option<(u8, u8)>,
    /// The partner's ISO 3166-1 alpha-2 country.
    pub country: Option<String>,
    /// Normalised interest tags (trimmed, lower-case, deduplicated, at most [`MAX_INTERESTS`]).
    pub interests: Vec<String>,
}

/// Why a profile or preference value was refused; the text is shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidValue(pub String);

/// Checks and normalises an ISO 639-1 language code (`"EN"` → `"en"`).
pub(crate) fn language_code(raw: &str) -> Result<String, InvalidValue> {
    let code = raw.trim().to_ascii_lowercase();
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(code)
    } else {
        Err(InvalidValue(format!(
            "language must be a two-letter ISO 639-1 code, got {:?}",
            crate::echo::clip(raw)
        )))
    }
}

/// Checks and normalises an ISO 3166-1 alpha-2 country code (`"de"` → `"DE"`).
pub(crate) fn country_code(raw: &str) -> Result<String, InvalidValue> {
    let code = raw.trim().to_ascii_uppercase();
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(InvalidValue(format!(
            "country must be a two-letter ISO 3166-1 code, got {:?}",
            crate::echo::clip(raw)
        )))
    }
}

/// Trims, lower-cases and deduplicates interest tags, keeping their first-seen order.
pub(crate) fn normalise_interests(raw: &[String]) -> Result<Vec<String>, InvalidValue> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len().min(MAX_INTERESTS));
    for tag in raw {
        let tag = tag.trim().to_lowercase();
        if tag.is_empty() {
            continue;
        }
        if tag.chars().count() > MAX_INTEREST_CHARS {
            return Err(InvalidValue(format!(
                "an interest may have at most {MAX_INTEREST_CHARS} characters"
            )));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_INTERESTS {
        return Err(InvalidValue(format!(
            "at most {MAX_INTERESTS} interests are allowed"
        )));
    }
    Ok(out)
}

impl Preferences {
    /// True when `other` satisfies every hard filter of these preferences.
    pub fn accepts(&self, other: &Profile) -> bool {
        if let Some(lang) = &self.language
            && !other.languages.iter().any(|l| l == lang)
        {
            return false;
        }
        let gender_ok = match self.gender {
            GenderWish::Any => true,
            GenderWish::Male => other.gender == Some(Gender::Male),
            GenderWish::Female => other.gender == Some(Gender::Female),
        };
        if !gender_ok {
            return false;
        }
        if let Some((lo, hi)) = self.age_range {
            match other.age {
                Some(age) if (lo..=hi).contains(&age) => {}
                _ => return false,
            }
        }
        if let Some(country) = &self.country
            && other.country.as_ref() != Some(country)
        {
            return false;
        }
        true
    }

    /// Interests both lists share, in this list's order.
    pub fn common_interests(&self, other: &Preferences) -> Vec<String> {
        self.interests
            .iter()
            .filter(|t| other.interests.contains(t))
            .cloned()
            .collect()
    }
}

/// True when two users may be paired: each one's hard filters accept the other's profile (the
/// reference rule's test; the matchmaker's index applies the same filters).
#[cfg(test)]
pub(crate) fn compatible(a: (&Profile, &Preferences), b: (&Profile, &Preferences)) -> bool {
    a.1.accepts(b.0) && b.1.accepts(a.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(gender: Option<Gender>, age: Option<u8>, langs: &[&str]) -> Profile {
        Profile {
            gender,
            age,
            languages: langs.iter().map(|s| s.to_string()).collect(),
            country: None,
        }
    }

    #[test]
    fn codes_are_normalised_and_checked() {
        assert_eq!(language_code(" EN ").unwrap(), "en");
        assert!(language_code("eng").is_err());
        assert!(language_code("e1").is_err());
        assert_eq!(country_code("de").unwrap(), "DE");
        assert!(country_code("").is_err());
    }

    #[test]
    fn interests_are_trimmed_lowercased_and_deduplicated() {
        let raw = vec![" Music ".into(), "music".into(), "".into(), "Chess".into()];
        assert_eq!(normalise_interests(&raw).unwrap(), vec!["music", "chess"]);
        let many: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        assert!(normalise_interests(&many).is_err());
        assert!(normalise_interests(&["x".repeat(33)]).is_err());
    }

    #[test]
    fn wishes_about_missing_attributes_are_not_met() {
        let wants_female = Preferences {
            gender: GenderWish::Female,
            ..Default::default()
        };
        assert!(!wants_female.accepts(&Profile::default()));
        assert!(wants_female.accepts(&profile(Some(Gender::Female), None, &[])));
        let wants_age = Preferences {
            age_range: Some((20, 30)),
            ..Default::default()
        };
        assert!(!wants_age.accepts(&Profile::default()));
        assert!(wants_age.accepts(&profile(None, Some(30), &[])));
        assert!(!wants_age.accepts(&profile(None, Some(31), &[])));
    }

    #[test]
    fn compatibility_holds_both_ways() {
        let a = profile(Some(Gender::Male), Some(25), &["en"]);
        let b = profile(Some(Gender::Female), Some(40), &["en", "de"]);
        let a_wants_de = Preferences {
            language: Some("de".into()),
            ..Default::default()
        };
        let b_wants_young = Preferences {
            age_range: Some((18, 30)),
            ..Default::default()
        };
        let none = Preferences::default();
        assert!(compatible((&a, &none), (&b, &b_wants_young)));
        // a's wish (German) holds for b, but b's wish does not matter here: both must hold.
        assert!(compatible((&a, &a_wants_de), (&b, &none)));
        // b wants German too, a does not speak it.
        let b_wants_de = a_wants_de.clone();
        assert!(!compatible((&a, &none), (&b, &b_wants_de)));
    }
}
