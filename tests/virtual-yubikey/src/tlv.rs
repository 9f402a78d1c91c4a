//! BER-TLV, the encoding of PIV command data, responses and data objects.
//!
//! Tags are one to three bytes (`7C`, `7F49`, `5FC105`): a first byte whose low
//! five bits are all set announces more tag bytes, each with its high bit set
//! while yet more follow. Lengths are `0..=7F` in one byte, or `81 xx`,
//! `82 xx xx`, `83 xx xx xx`. Tags are carried as `u32` (`0x5FC105`).

/// One parsed TLV; `value` borrows from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag, its bytes read big-endian (`0x7F49`).
    pub tag: u32,
    /// The value bytes.
    pub value: &'a [u8],
}

/// Malformed TLV data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed BER-TLV data")]
pub struct TlvError;

/// Parses one TLV from the front of `input`; returns it and what follows.
pub fn parse(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), TlvError> {
    let (&first, mut rest) = input.split_first().ok_or(TlvError)?;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        loop {
            let (&b, r) = rest.split_first().ok_or(TlvError)?;
            rest = r;
            if tag > 0xFFFF {
                return Err(TlvError);
            }
            tag = (tag << 8) | u32::from(b);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let (&l0, r) = rest.split_first().ok_or(TlvError)?;
    rest = r;
    let len = match l0 {
        0..=0x7F => usize::from(l0),
        0x81..=0x83 => {
            let n = usize::from(l0 & 0x7F);
            if rest.len() < n {
                return Err(TlvError);
            }
            let (bytes, r) = rest.split_at(n);
            rest = r;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        }
        _ => return Err(TlvError),
    };
    if rest.len() < len {
        return Err(TlvError);
    }
    let (value, rest) = rest.split_at(len);
    Ok((Tlv { tag, value }, rest))
}

/// Parses all of `input` as a sequence of TLVs.
pub fn parse_all(mut input: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = parse(input)?;
        out.push(tlv);
        input = rest;
    }
    Ok(out)
}

/// Parses `input` as exactly one TLV with tag `tag` and returns its value.
pub fn parse_single(input: &[u8], tag: u32) -> Result<&[u8], TlvError> {
    match parse(input)? {
        (tlv, []) if tlv.tag == tag => Ok(tlv.value),
        _ => Err(TlvError),
    }
}

/// The first TLV with tag `tag` among `tlvs`.
pub fn find<'a>(tlvs: &[Tlv<'a>], tag: u32) -> Option<&'a [u8]> {
    tlvs.iter().find(|t| t.tag == tag).map(|t| t.value)
}

/// Appends the bytes of `tag` (without leading zero bytes) to `out`.
pub fn write_tag(out: &mut Vec<u8>, tag: u32) {
    let bytes = tag.to_be_bytes();
    let skip = bytes.iter().take(3).take_while(|b| **b == 0).count();
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends a BER length to `out`.
pub fn write_len(out: &mut Vec<u8>, len: usize) {
    // Three length bytes cover far more than any APDU or object.
    let bytes = len.to_be_bytes();
    match len {
        0..=0x7F => out.push(bytes[bytes.len() - 1]),
        0x80..=0xFF => out.extend_from_slice(&[0x81, bytes[bytes.len() - 1]]),
        0x100..=0xFFFF => {
            out.extend_from_slice(&[0x82, bytes[bytes.len() - 2], bytes[bytes.len() - 1]])
        }
        _ => out.extend_from_slice(&[
            0x83,
            bytes[bytes.len() - 3],
            bytes[bytes.len() - 2],
            bytes[bytes.len() - 1],
        ]),
    }
}

/// Appends one TLV to `out`.
pub fn write(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    write_tag(out, tag);
    write_len(out, value.len());
    out.extend_from_slice(value);
}

/// Encodes one TLV.
pub fn encode(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    write(&mut out, tag, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_tags_and_lengths() {
        for (tag, len) in [
            (0x53, 0),
            (0x7C, 0x7F),
            (0x7F49, 0x80),
            (0x5FC105, 0xFF),
            (0x53, 0x100),
            (0x53, 3000),
        ] {
            let value = vec![0xA5; len];
            let enc = encode(tag, &value);
            let (tlv, rest) = parse(&enc).unwrap();
            assert_eq!((tlv.tag, tlv.value, rest), (tag, &value[..], &[][..]));
        }
    }

    #[test]
    fn known_encodings() {
        assert_eq!(encode(0x7F49, &[1]), vec![0x7F, 0x49, 1, 1]);
        assert_eq!(encode(0x5FC105, &[]), vec![0x5F, 0xC1, 0x05, 0]);
        assert_eq!(&encode(0x53, &[0; 200])[..3], &[0x53, 0x81, 200]);
        assert_eq!(&encode(0x53, &[0; 300])[..4], &[0x53, 0x82, 1, 44]);
    }

    #[test]
    fn parses_sequences_and_rejects_truncation() {
        let data = [0x7C, 0x02, 0x80, 0x00];
        let inner = parse_single(&data, 0x7C).unwrap();
        let tlvs = parse_all(inner).unwrap();
        assert_eq!(
            tlvs,
            vec![Tlv {
                tag: 0x80,
                value: &[]
            }]
        );
        assert_eq!(find(&tlvs, 0x80), Some(&[][..]));
        assert_eq!(parse(&[0x53, 0x05, 1]), Err(TlvError));
        assert_eq!(parse(&[0x5F]), Err(TlvError));
        assert_eq!(parse(&[0x53, 0x84, 0, 0, 0, 1, 0]), Err(TlvError));
        assert_eq!(parse_single(&[0x53, 0, 0x53, 0], 0x53), Err(TlvError));
    }
}
