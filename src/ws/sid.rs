//! Engine.IO session ids.

/// The characters of an id: URL-safe base64, so an id goes into a query string as it is.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// An Engine.IO session id, which is also the Socket.IO socket id: 16 random characters
/// (96 bits), as Node's engine.io makes them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid([u8; 16]);

impl Sid {
    /// A new random id.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Sid {
        let raw: [u8; 16] = rand::random();
        #[allow(clippy::indexing_slicing, reason = "b & 63 indexes 64 characters")]
        Sid(raw.map(|b| ALPHABET[(b & 63) as usize]))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ids are ASCII")
    }
}

impl std::str::FromStr for Sid {
    type Err = ();

    /// Reads an id a client sent back (`sid=` of a request): exactly 16 characters of the
    /// alphabet.
    fn from_str(s: &str) -> Result<Sid, ()> {
        let bytes: [u8; 16] = s.as_bytes().try_into().map_err(|_| ())?;
        if bytes.iter().all(|b| ALPHABET.contains(b)) {
            Ok(Sid(bytes))
        } else {
            Err(())
        }
    }
}

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

impl serde::Serialize for Sid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_url_safe_characters_and_read_back() {
        let a = Sid::new();
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(a.as_str().parse::<Sid>(), Ok(a));
        assert_ne!(a, Sid::new());
        assert!("short".parse::<Sid>().is_err());
        assert!("sixteen-chars-ok".parse::<Sid>().is_ok());
        assert!("sixteen chars no".parse::<Sid>().is_err(), "a space");
    }
}
