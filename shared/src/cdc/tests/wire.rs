//! A pgoutput encoder for the tests: the inverse of `parse`, for round trips and for messages
//! the captured fixtures do not hold (errors, unusual shapes).

use crate::cdc::pgoutput::{Column, Message, OldKind, OldTuple};

pub fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut w = Vec::new();
    match m {
        Message::Begin(b) => {
            w.push(b'B');
            w.extend(b.final_lsn.to_be_bytes());
            w.extend(b.commit_ts.to_be_bytes());
            w.extend(b.xid.to_be_bytes());
        }
        Message::Commit(c) => {
            w.push(b'C');
            w.push(c.flags);
            w.extend(c.commit_lsn.to_be_bytes());
            w.extend(c.end_lsn.to_be_bytes());
            w.extend(c.commit_ts.to_be_bytes());
        }
        Message::Origin(o) => {
            w.push(b'O');
            w.extend(o.commit_lsn.to_be_bytes());
            cstr(&mut w, o.name);
        }
        Message::Relation(r) => {
            w.push(b'R');
            w.extend(r.oid.to_be_bytes());
            cstr(&mut w, r.namespace);
            cstr(&mut w, r.name);
            w.push(r.replica_identity);
            w.extend((r.columns.len() as i16).to_be_bytes());
            for c in &r.columns {
                w.push(u8::from(c.key));
                cstr(&mut w, c.name);
                w.extend(c.type_oid.to_be_bytes());
                w.extend(c.type_mod.to_be_bytes());
            }
        }
        Message::Type(t) => {
            w.push(b'Y');
            w.extend(t.oid.to_be_bytes());
            cstr(&mut w, t.namespace);
            cstr(&mut w, t.name);
        }
        Message::Insert(i) => {
            w.push(b'I');
            w.extend(i.relation.to_be_bytes());
            w.push(b'N');
            tuple(&mut w, &i.new);
        }
        Message::Update(u) => {
            w.push(b'U');
            w.extend(u.relation.to_be_bytes());
            if let Some(old) = &u.old {
                old_tuple(&mut w, old);
            }
            w.push(b'N');
            tuple(&mut w, &u.new);
        }
        Message::Delete(d) => {
            w.push(b'D');
            w.extend(d.relation.to_be_bytes());
            old_tuple(&mut w, &d.old);
        }
        Message::Truncate(t) => {
            w.push(b'T');
            w.extend((t.relations.len() as i32).to_be_bytes());
            w.push(t.options);
            for r in &t.relations {
                w.extend(r.to_be_bytes());
            }
        }
        Message::Message(m) => {
            w.push(b'M');
            w.push(u8::from(m.transactional));
            w.extend(m.lsn.to_be_bytes());
            cstr(&mut w, m.prefix);
            w.extend((m.content.len() as i32).to_be_bytes());
            w.extend(m.content);
        }
    }
    w
}

fn cstr(w: &mut Vec<u8>, s: &str) {
    w.extend(s.as_bytes());
    w.push(0);
}

fn old_tuple(w: &mut Vec<u8>, old: &OldTuple<'_>) {
    w.push(match old.kind {
        OldKind::Key => b'K',
        OldKind::Full => b'O',
    });
    tuple(w, &old.columns);
}

fn tuple(w: &mut Vec<u8>, columns: &[Column<'_>]) {
    w.extend((columns.len() as i16).to_be_bytes());
    for c in columns {
        match c {
            Column::Null => w.push(b'n'),
            Column::UnchangedToast => w.push(b'u'),
            Column::Text(t) => {
                w.push(b't');
                w.extend((t.len() as i32).to_be_bytes());
                w.extend(*t);
            }
        }
    }
}

/// The rows of a COPY BINARY stream of the peek, the encoder side of `CopyFrames`.
pub fn copy_stream(rows: &[(u64, u32, Vec<u8>)]) -> Vec<u8> {
    let mut w = b"PGCOPY\n\xff\r\n\0".to_vec();
    w.extend(0u32.to_be_bytes());
    w.extend(0u32.to_be_bytes());
    for (lsn, xid, data) in rows {
        w.extend(3i16.to_be_bytes());
        w.extend(8i32.to_be_bytes());
        w.extend(lsn.to_be_bytes());
        w.extend(4i32.to_be_bytes());
        w.extend(xid.to_be_bytes());
        w.extend((data.len() as i32).to_be_bytes());
        w.extend(data);
    }
    w.extend((-1i16).to_be_bytes());
    w
}
