//! Value encoding: one format-version byte, then bincode 1.3.3 (its byte format equals bincode
//! 2's `legacy()` config and `wincode`'s, so stored data has a migration path).
//!
//! This is the only place that knows bincode. Version 1 is the only version so far; a reader that
//! meets another version reports corruption instead of guessing.

use serde::{de::DeserializeOwned, Serialize};

use super::StoreError;

const VERSION: u8 = 1;

/// Encodes a record with the version byte in front.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![VERSION];
    bincode::serialize_into(&mut out, value)
        .map_err(|e| StoreError::Corrupt(format!("encode: {e}")))?;
    Ok(out)
}

/// Decodes a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => {
            bincode::deserialize(rest).map_err(|e| StoreError::Corrupt(format!("decode: {e}")))
        }
        Some((v, _)) => Err(StoreError::Corrupt(format!("unknown format version {v}"))),
        None => Err(StoreError::Corrupt("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemberRecord, MessageRecord};

    #[test]
    fn records_round_trip_with_a_version_byte() {
        let m = MessageRecord {
            from: "alice".into(),
            client_id: "c1".into(),
            ts: 7,
            body: "héllo".into(),
        };
        let bytes = encode(&m).unwrap();
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<MessageRecord>(&bytes).unwrap(), m);
        let c = MemberRecord {
            joined_seq: 1,
            delivered: 5,
            read: 3,
        };
        assert_eq!(encode(&c).unwrap().len(), 1 + 24);
        assert!(decode::<MemberRecord>(&[9, 0]).is_err());
        assert!(decode::<MemberRecord>(&[]).is_err());
        assert!(decode::<MemberRecord>(&[VERSION, 1]).is_err());
    }
}
