//! The login guard: every session this crate opens passes the server's
//! authentication request through here before sqlx sees it.
//!
//! sqlx answers whatever the server asks: a cleartext password request gets
//! the password, an MD5 request a hash anyone can replay. TLS proves the
//! server's name, not the honesty of whoever holds its certificate, so the
//! guard decides what may be answered, as libpq's `require_auth=scram-sha-256`
//! (PostgreSQL 16+) does, but always on:
//!
//! - SCRAM-SHA-256 is answered, with at most [`MAX_SCRAM_ITERATIONS`] rounds
//!   (the count is the server's choice, and each round is client CPU);
//! - a server that lets the user in without a password is accepted (it learns
//!   nothing);
//! - anything else (cleartext, MD5, Kerberos, GSSAPI, SSPI, SCM, a SASL
//!   mechanism other than SCRAM-SHA-256) ends the connection before a byte of
//!   an answer is sent, and sqlx receives an error (SQLSTATE
//!   [`GUARD_SQLSTATE`]) naming the method the server asked for.
//!
//! After `AuthenticationOk` the guard steps aside and the bytes flow as they
//! are.

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The most SCRAM iterations a server may ask of a login. PostgreSQL's
/// default is 4096; the function writes verifiers with at most this many
/// (see rotation-fn's `scram`). Beyond it a login is refused.
pub const MAX_SCRAM_ITERATIONS: u32 = 100_000;

/// The SQLSTATE of the guard's refusal (class 28: invalid authorization).
/// Not one PostgreSQL uses, so a refusal is told apart from a wrong password.
pub const GUARD_SQLSTATE: &str = "28G01";

/// The most a server may send before authentication is settled.
const MAX_STARTUP_BYTES: usize = 64 * 1024;

/// Relays one session between sqlx (`client`) and the server, refusing weak
/// authentication requests. Returns when either side closes.
pub(crate) async fn relay<C, S>(mut client: C, mut server: S)
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    match startup(&mut client, &mut server).await {
        Ok(Settled::Authenticated) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Ok(Settled::Closed) => {}
        Err(refusal) => {
            let _ = client.write_all(&error_response(&refusal)).await;
            let _ = client.flush().await;
            // Both ends drop here: the server gets no answer.
        }
    }
}

enum Settled {
    Authenticated,
    Closed,
}

/// Forwards sqlx's bytes as they come (it only ever answers what the server
/// asked, and the guard holds back what must not be answered) and the
/// server's messages one by one, until the server says `AuthenticationOk`.
async fn startup<C, S>(client: &mut C, server: &mut S) -> Result<Settled, String>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut from_server: Vec<u8> = Vec::with_capacity(1024);
    let mut up = [0u8; 4096];
    let mut down = [0u8; 4096];
    loop {
        // Both reads are cancel-safe: a read that loses the race took nothing.
        tokio::select! {
            read = client.read(&mut up) => match read {
                Ok(0) | Err(_) => return Ok(Settled::Closed),
                Ok(n) => {
                    if server.write_all(&up[..n]).await.is_err() || server.flush().await.is_err() {
                        return Ok(Settled::Closed);
                    }
                }
            },
            read = server.read(&mut down) => match read {
                Ok(0) | Err(_) => {
                    let _ = client.write_all(&from_server).await;
                    return Ok(Settled::Closed);
                }
                Ok(n) => {
                    from_server.extend_from_slice(&down[..n]);
                    let mut checked = 0;
                    while let Some((tag, body, len)) = next_message(&from_server[checked..]) {
                        match inspect(tag, body)? {
                            Verdict::Forward => checked += len,
                            Verdict::Authenticated => {
                                // AuthenticationOk and whatever followed it.
                                if client.write_all(&from_server).await.is_err() {
                                    return Ok(Settled::Closed);
                                }
                                return Ok(Settled::Authenticated);
                            }
                        }
                    }
                    if checked > 0 {
                        if client.write_all(&from_server[..checked]).await.is_err() || client.flush().await.is_err() {
                            return Ok(Settled::Closed);
                        }
                        from_server.drain(..checked);
                    }
                    if from_server.len() > MAX_STARTUP_BYTES {
                        return Err("the server sent an oversized message before authenticating".into());
                    }
                }
            },
        }
    }
}

/// The next complete message in `buf`: tag, body, and its whole length.
fn next_message(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let header = buf.get(..5)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let total = 1 + len.max(4);
    let body = buf.get(5..total)?;
    Some((header[0], body, total))
}

enum Verdict {
    Forward,
    Authenticated,
}

/// What to do with one server message received before `AuthenticationOk`.
fn inspect(tag: u8, body: &[u8]) -> Result<Verdict, String> {
    match tag {
        b'R' => authentication(body),
        // An error ends the session anyway; a notice, parameter status or
        // protocol-version negotiation carries no request.
        b'E' | b'N' | b'S' | b'v' => Ok(Verdict::Forward),
        other => Err(format!("the server sent message {:?} before authenticating", char::from(other))),
    }
}

fn authentication(body: &[u8]) -> Result<Verdict, String> {
    let Some(code) = body.get(..4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])) else {
        return Err("the server sent a malformed authentication request".into());
    };
    let refused = |method: &str| {
        Err(format!(
            "the server asked for {method}; only SCRAM-SHA-256 is answered, so no password or hash was sent \
             (a server that asks for it may be an impostor holding a valid certificate)"
        ))
    };
    match code {
        0 => Ok(Verdict::Authenticated),
        3 => refused("a cleartext password"),
        5 => refused("an MD5 password hash"),
        2 => refused("Kerberos V5 authentication"),
        6 => refused("SCM credentials"),
        7 | 8 => refused("GSSAPI authentication"),
        9 => refused("SSPI authentication"),
        10 => {
            let mechanisms: Vec<&[u8]> = body[4..].split(|b| *b == 0).filter(|m| !m.is_empty()).collect();
            if mechanisms.contains(&&b"SCRAM-SHA-256"[..]) {
                Ok(Verdict::Forward)
            } else {
                let names: Vec<String> = mechanisms.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
                refused(&format!("SASL mechanisms {names:?} without SCRAM-SHA-256"))
            }
        }
        11 => match iterations(&body[4..]) {
            Some(i) if i > MAX_SCRAM_ITERATIONS => Err(format!(
                "the server asked for {i} SCRAM iterations; more than {MAX_SCRAM_ITERATIONS} are refused \
                 (each one is the client's CPU time)"
            )),
            _ => Ok(Verdict::Forward),
        },
        12 => Ok(Verdict::Forward),
        other => refused(&format!("authentication method {other}")),
    }
}

/// `i=` of a SCRAM server-first-message (`r=…,s=…,i=4096`).
fn iterations(message: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(message).ok()?;
    let value = text.split(',').find_map(|attr| attr.strip_prefix("i="))?;
    // A count past u32 is past the ceiling too.
    Some(value.parse::<u64>().ok().map_or(u32::MAX, |i| u32::try_from(i).unwrap_or(u32::MAX)))
}

/// A FATAL ErrorResponse carrying the guard's refusal, as the server would
/// send one.
fn error_response(message: &str) -> Vec<u8> {
    let clean = message.replace('\0', " ");
    let mut fields = Vec::new();
    for (code, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', GUARD_SQLSTATE), (b'M', clean.as_str())] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(code: u32, rest: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(rest);
        body
    }

    #[test]
    fn only_scram_and_no_password_are_answered() {
        assert!(matches!(authentication(&auth(0, b"")), Ok(Verdict::Authenticated)));
        assert!(matches!(authentication(&auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")), Ok(Verdict::Forward)));
        for (code, named) in [(3, "cleartext"), (5, "MD5"), (7, "GSSAPI"), (9, "SSPI"), (2, "Kerberos"), (42, "42")] {
            let Err(e) = authentication(&auth(code, b"salt")) else { panic!("{code} answered") };
            assert!(e.contains(named), "{e}");
        }
        let Err(e) = authentication(&auth(10, b"SCRAM-SHA-256-PLUS\0\0")) else { panic!("PLUS only") };
        assert!(e.contains("SCRAM-SHA-256-PLUS"), "{e}");
    }

    #[test]
    fn the_iteration_count_is_bounded() {
        assert!(matches!(authentication(&auth(11, b"r=abc,s=c2FsdA==,i=4096")), Ok(Verdict::Forward)));
        assert!(matches!(authentication(&auth(11, b"r=abc,s=c2FsdA==,i=100000")), Ok(Verdict::Forward)));
        for huge in ["2147483647", "100001", "99999999999999"] {
            let msg = format!("r=abc,s=c2FsdA==,i={huge}");
            let Err(e) = authentication(&auth(11, msg.as_bytes())) else { panic!("{huge} answered") };
            assert!(e.contains("SCRAM iterations") && e.contains("100000"), "{e}");
        }
    }

    #[test]
    fn messages_are_framed_and_the_refusal_is_a_fatal_error() {
        let mut stream = vec![b'R', 0, 0, 0, 8, 0, 0, 0, 3, b'Z'];
        assert_eq!(next_message(&stream).map(|(t, b, l)| (t, b.len(), l)), Some((b'R', 4, 9)));
        stream.truncate(7);
        assert!(next_message(&stream).is_none(), "incomplete");
        let e = error_response("no");
        assert_eq!(e[0], b'E');
        assert_eq!(u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize, e.len() - 1);
        assert!(e.windows(6).any(|w| w == b"C28G01"));
    }
}
