//! Value encoding, byte by byte: widths, byte orders, temporal layouts, NUMERIC.

use super::*;

fn enc(kind: Kind, b: &[u8]) -> String {
    let mut out = Vec::new();
    encode(kind, b, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn integers_follow_width_sign_and_byte_order() {
    assert_eq!(
        enc(
            Kind::MyInt {
                bytes: 1,
                signed: true
            },
            &[0xff]
        ),
        "-1"
    );
    assert_eq!(
        enc(
            Kind::MyInt {
                bytes: 1,
                signed: false
            },
            &[0xff]
        ),
        "255"
    );
    assert_eq!(
        enc(
            Kind::MyInt {
                bytes: 4,
                signed: true
            },
            &(-5i32).to_le_bytes()
        ),
        "-5"
    );
    assert_eq!(
        enc(
            Kind::MyInt {
                bytes: 8,
                signed: false
            },
            &u64::MAX.to_le_bytes()
        ),
        "18446744073709551615"
    );
    assert_eq!(
        enc(
            Kind::PgInt {
                bytes: 8,
                signed: true
            },
            &i64::MIN.to_be_bytes()
        ),
        "-9223372036854775808"
    );
    assert_eq!(
        enc(
            Kind::PgInt {
                bytes: 2,
                signed: true
            },
            &(-300i16).to_be_bytes()
        ),
        "-300"
    );
    let mut out = Vec::new();
    assert!(encode(
        Kind::PgInt {
            bytes: 4,
            signed: true
        },
        &[1, 2],
        &mut out
    )
    .is_err());
}

#[test]
fn floats_are_shortest_and_non_finite_are_strings() {
    assert_eq!(
        enc(
            Kind::Float {
                bytes: 4,
                big_endian: false
            },
            &0.1f32.to_le_bytes()
        ),
        "0.1"
    );
    assert_eq!(
        enc(
            Kind::Float {
                bytes: 8,
                big_endian: true
            },
            &2.5f64.to_be_bytes()
        ),
        "2.5"
    );
    assert_eq!(
        enc(
            Kind::Float {
                bytes: 8,
                big_endian: true
            },
            &f64::NAN.to_be_bytes()
        ),
        "\"NaN\""
    );
    assert_eq!(
        enc(
            Kind::Float {
                bytes: 4,
                big_endian: true
            },
            &f32::NEG_INFINITY.to_be_bytes()
        ),
        "\"-Infinity\""
    );
}

#[test]
fn mysql_temporal_values() {
    let mut dt = vec![11, 0xe8, 0x07, 2, 29, 23, 59, 58];
    dt.extend_from_slice(&123_456u32.to_le_bytes());
    assert_eq!(
        enc(Kind::MyDateTime, &dt),
        "\"2024-02-29T23:59:58.123456Z\""
    );
    assert_eq!(
        enc(Kind::MyDateTime, &[7, 0xe8, 0x07, 1, 2, 3, 4, 5]),
        "\"2024-01-02T03:04:05.000000Z\""
    );
    assert_eq!(
        enc(Kind::MyDateTime, &[4, 0xe8, 0x07, 1, 2]),
        "\"2024-01-02T00:00:00.000000Z\""
    );
    assert_eq!(enc(Kind::MyDateTime, &[0]), "null");
    assert_eq!(
        enc(Kind::MyDate, &[4, 0xe8, 0x07, 12, 31]),
        "\"2024-12-31\""
    );
    assert_eq!(enc(Kind::MyDate, &[0]), "null");
    let t = [8, 1, 1, 0, 0, 0, 2, 3, 4];
    assert_eq!(enc(Kind::MyTime, &t), "\"-26:03:04.000000\"");
    let mut out = Vec::new();
    assert!(encode(Kind::MyDateTime, &[9, 1, 2], &mut out).is_err());
}

#[test]
fn postgres_temporal_values() {
    assert_eq!(
        enc(Kind::PgTimestamp, &0i64.to_be_bytes()),
        "\"2000-01-01T00:00:00.000000Z\""
    );
    assert_eq!(
        enc(Kind::PgTimestamp, &(-1i64).to_be_bytes()),
        "\"1999-12-31T23:59:59.999999Z\""
    );
    assert_eq!(
        enc(Kind::PgTimestamp, &i64::MAX.to_be_bytes()),
        "\"infinity\""
    );
    assert_eq!(enc(Kind::PgDate, &(-1i32).to_be_bytes()), "\"1999-12-31\"");
    assert_eq!(enc(Kind::PgDate, &366i32.to_be_bytes()), "\"2001-01-01\"");
    assert_eq!(
        enc(Kind::PgTime, &(3_723_000_004i64).to_be_bytes()),
        "\"01:02:03.000004\""
    );
    let mut tz = 0i64.to_be_bytes().to_vec();
    tz.extend_from_slice(&(-19_800i32).to_be_bytes());
    assert_eq!(enc(Kind::PgTimeTz, &tz), "\"00:00:00.000000+05:30\"");
}

#[test]
fn text_bytes_uuid_and_json() {
    assert_eq!(enc(Kind::Text, "a\"b\nç".as_bytes()), "\"a\\\"b\\nç\"");
    assert_eq!(enc(Kind::Binary, &[0, 255]), "\"AP8=\"");
    assert_eq!(enc(Kind::MyBit, &[1, 0]), "256");
    let u = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    assert_eq!(
        enc(Kind::PgUuid, &u),
        "\"12345678-9abc-def0-0102-030405060708\""
    );
    assert_eq!(enc(Kind::Json, b"{\"a\":\n [1, 2]}"), "{\"a\":[1,2]}");
    assert_eq!(enc(Kind::PgJsonb, b"\x01\"x\""), "\"x\"");
    assert_eq!(enc(Kind::PgBool, &[1]), "true");
    let mut out = Vec::new();
    assert!(encode(Kind::Text, &[0xff], &mut out).is_err());
    assert!(encode(Kind::PgJsonb, b"{}", &mut out).is_err());
}

fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
    let mut b = Vec::new();
    for h in [digits.len() as u16, weight as u16, sign, dscale] {
        b.extend_from_slice(&h.to_be_bytes());
    }
    for d in digits {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b
}

#[test]
fn numeric_binary_to_exact_text() {
    assert_eq!(pg_numeric(&numeric(0, 0, 2, &[12, 3000])).unwrap(), "12.30");
    assert_eq!(
        pg_numeric(&numeric(1, 0x4000, 0, &[1, 2])).unwrap(),
        "-10002"
    );
    assert_eq!(pg_numeric(&numeric(-2, 0, 6, &[1200])).unwrap(), "0.000012");
    assert_eq!(pg_numeric(&numeric(-2, 0, 8, &[12])).unwrap(), "0.00000012");
    assert_eq!(pg_numeric(&numeric(2, 0, 0, &[5])).unwrap(), "500000000");
    assert_eq!(pg_numeric(&numeric(0, 0, 0, &[])).unwrap(), "0");
    assert_eq!(pg_numeric(&numeric(0, 0, 3, &[])).unwrap(), "0.000");
    assert_eq!(pg_numeric(&numeric(0, 0xC000, 0, &[])).unwrap(), "NaN");
    assert!(pg_numeric(&numeric(0, 0, 0, &[1])[..9]).is_err());
    assert_eq!(
        enc(Kind::PgNumeric, &numeric(0, 0, 1, &[7, 5000])),
        "\"7.5\""
    );
}
