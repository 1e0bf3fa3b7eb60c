use bencode::{decode, decode_strict, decode_with, ErrorKind, Kind, Limits, Mode, Owned};

fn err(input: &[u8]) -> bencode::Error {
    decode(input).expect_err("input should be rejected")
}

#[test]
fn decodes_each_type() {
    assert_eq!(decode(b"i42e").unwrap().as_int(), Some(42));
    assert_eq!(decode(b"i-7e").unwrap().as_int(), Some(-7));
    assert_eq!(decode(b"i0e").unwrap().as_int(), Some(0));
    assert_eq!(decode(b"4:spam").unwrap().as_bytes(), Some(&b"spam"[..]));
    assert_eq!(decode(b"0:").unwrap().as_bytes(), Some(&b""[..]));
    let list = decode(b"l4:spami3ee").unwrap();
    let items = list.as_list().unwrap();
    assert_eq!(items[0].as_str(), Some("spam"));
    assert_eq!(items[1].as_int(), Some(3));
    let dict = decode(b"d3:cow3:moo4:spam4:eggse").unwrap();
    let d = dict.as_dict().unwrap();
    assert_eq!(d.get(b"cow").unwrap().as_str(), Some("moo"));
    assert_eq!(d.get(b"spam").unwrap().as_str(), Some("eggs"));
    assert!(d.get(b"nope").is_none());
}

#[test]
fn integer_extremes() {
    assert_eq!(
        decode(b"i9223372036854775807e").unwrap().as_int(),
        Some(i64::MAX)
    );
    assert_eq!(
        decode(b"i-9223372036854775808e").unwrap().as_int(),
        Some(i64::MIN)
    );
    assert_eq!(
        err(b"i9223372036854775808e").kind,
        ErrorKind::IntegerOverflow
    );
    assert_eq!(
        err(b"i-9223372036854775809e").kind,
        ErrorKind::IntegerOverflow
    );
    assert_eq!(
        err(b"i99999999999999999999999e").kind,
        ErrorKind::IntegerOverflow
    );
}

#[test]
fn keeps_raw_spans_and_offsets() {
    let input = b"d8:announce3:url4:infod6:lengthi5e4:name1:xee";
    let v = decode(input).unwrap();
    let info = v.as_dict().unwrap().get(b"info").unwrap();
    assert_eq!(info.raw(), b"d6:lengthi5e4:name1:xe");
    assert_eq!(info.offset(), 22);
    assert_eq!(
        &input[info.offset()..info.offset() + info.raw().len()],
        info.raw()
    );
    assert_eq!(v.raw(), &input[..]);
}

#[test]
fn unsorted_keys_tolerated_but_not_in_strict_mode() {
    let input = b"d1:bi1e1:ai2ee";
    let v = decode(input).unwrap();
    let d = v.as_dict().unwrap();
    assert!(!d.is_sorted());
    assert_eq!(d.get(b"a").unwrap().as_int(), Some(2));
    assert_eq!(d.get(b"b").unwrap().as_int(), Some(1));
    let e = decode_strict(input).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsortedKey);
    assert_eq!(e.offset, 7);
}

#[test]
fn duplicate_keys_always_rejected() {
    assert_eq!(err(b"d1:ai1e1:ai2ee").kind, ErrorKind::DuplicateKey);
    // Not adjacent: caught once the dictionary turns out to be unsorted.
    let e = err(b"d1:ai1e1:ci1e1:bi1e1:ai2ee");
    assert_eq!(e.kind, ErrorKind::DuplicateKey);
    assert_eq!(e.offset, 19);
}

#[test]
fn rejects_malformed_forms_with_offsets() {
    let cases: &[(&[u8], ErrorKind, usize)] = &[
        (b"", ErrorKind::UnexpectedEnd, 0),
        (b"i", ErrorKind::UnexpectedEnd, 1),
        (b"ie", ErrorKind::EmptyInteger, 1),
        (b"i-e", ErrorKind::EmptyInteger, 1),
        (b"i03e", ErrorKind::LeadingZero, 1),
        (b"i-0e", ErrorKind::NegativeZero, 1),
        (b"i--1e", ErrorKind::UnexpectedByte(b'-'), 2),
        (b"i1.5e", ErrorKind::UnexpectedByte(b'.'), 2),
        (b"i+1e", ErrorKind::UnexpectedByte(b'+'), 1),
        (b"i 1e", ErrorKind::UnexpectedByte(b' '), 1),
        (b"04:spam", ErrorKind::LeadingZero, 0),
        (
            b"5:spam",
            ErrorKind::LengthPastEnd {
                len: 5,
                available: 4,
            },
            0,
        ),
        (b"-1:a", ErrorKind::UnexpectedByte(b'-'), 0),
        (b"4spam", ErrorKind::UnexpectedByte(b's'), 1),
        (b"l", ErrorKind::UnexpectedEnd, 1),
        (b"li1e", ErrorKind::UnexpectedEnd, 4),
        (b"d", ErrorKind::UnexpectedEnd, 1),
        (b"d1:a", ErrorKind::UnexpectedEnd, 4),
        (b"di1ei2ee", ErrorKind::KeyNotString, 1),
        (b"dlei1ee", ErrorKind::KeyNotString, 1),
        (b"x", ErrorKind::UnexpectedByte(b'x'), 0),
        (b"e", ErrorKind::UnexpectedByte(b'e'), 0),
        (b"i1ei2e", ErrorKind::TrailingData, 3),
        (b"4:spam ", ErrorKind::TrailingData, 6),
    ];
    for (input, kind, offset) in cases {
        let e = decode(input).expect_err(&String::from_utf8_lossy(input));
        assert_eq!(&e.kind, kind, "input {:?}", String::from_utf8_lossy(input));
        assert_eq!(
            e.offset,
            *offset,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn huge_length_prefix_is_an_error_not_an_allocation() {
    let e = err(b"2147483648:abc");
    assert_eq!(
        e.kind,
        ErrorKind::LengthPastEnd {
            len: 2_147_483_648,
            available: 3
        }
    );
    assert_eq!(
        err(b"99999999999999999999999:").kind,
        ErrorKind::IntegerOverflow
    );
}

#[test]
fn deep_nesting_stops_at_the_limit() {
    let mut deep = vec![b'l'; 100_000];
    deep.extend(std::iter::repeat_n(b'e', 100_000));
    let e = err(&deep);
    assert_eq!(e.kind, ErrorKind::TooDeep { limit: 100 });
    assert_eq!(e.offset, 100);

    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert!(decode_with(b"llleee", Mode::Tolerant, limits).is_ok());
    assert!(decode_with(b"lllleeee", Mode::Tolerant, limits).is_err());
    assert!(decode_with(b"ddd1:xleeee", Mode::Tolerant, limits).is_err());
}

#[test]
fn value_and_input_limits() {
    let limits = Limits {
        max_values: 3,
        ..Limits::default()
    };
    assert!(decode_with(b"li1ei2ee", Mode::Tolerant, limits).is_ok());
    let e = decode_with(b"li1ei2ei3ee", Mode::Tolerant, limits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooManyValues { limit: 3 });
    let limits = Limits {
        max_input: 4,
        ..Limits::default()
    };
    let e = decode_with(b"4:spam", Mode::Tolerant, limits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InputTooLarge { len: 6, limit: 4 });
}

#[test]
fn error_messages_name_the_offset() {
    let e = err(b"d4:infod4:name");
    assert_eq!(
        e.to_string(),
        "invalid bencode at byte 14: input ends in the middle of a value"
    );
}

#[test]
fn encodes_canonically() {
    let mut d = bencode::DictBuilder::new();
    d.insert("zeta", Owned::Int(-3))
        .insert("alpha", Owned::List(vec![Owned::str("x"), Owned::Int(0)]))
        .insert("mid", Owned::Raw(b"d1:ai1ee".to_vec()));
    let bytes = d.build().encode();
    assert_eq!(bytes, b"d5:alphal1:xi0ee3:midd1:ai1ee4:zetai-3ee");
    let v = decode_strict(&bytes).unwrap();
    assert!(matches!(v.kind(), Kind::Dict(_)));
    assert_eq!(v.to_owned_value().encode(), bytes);
}
