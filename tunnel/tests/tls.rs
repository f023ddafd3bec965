//! The tunnel's trust over real TLS on loopback: an agent bootstraps with its token and a
//! CSR, gets a certificate from the parent's CA, and opens a mutually authenticated rustls
//! connection to the cell, which reads the agent's identity from the certificate. A
//! certificate from another CA, an expired one, and a wrong token are refused.

use std::sync::Arc;

use lattice_tunnel::ca::DEFAULT_LIFETIME;
use lattice_tunnel::{
    AgentKey, BootstrapError, CaError, ClusterCa, ClusterIdentity, IssuedCert, TokenStore,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DOMAIN: &str = "lattice.test";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The cell's own certificate: the CA signs it like an agent's, for the parent cluster.
fn cell_cert(ca: &ClusterCa, now: jiff::Timestamp) -> (IssuedCert, AgentKey) {
    let key = AgentKey::generate().unwrap();
    let me = ClusterIdentity::new(DOMAIN, "parent").unwrap();
    let cert = ca
        .sign_csr_at(
            &key.csr_pem(&me).unwrap(),
            &me,
            &["127.0.0.1".to_owned()],
            now,
            DEFAULT_LIFETIME,
        )
        .unwrap();
    (cert, key)
}

fn roots(ca: &ClusterCa) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert_der())).unwrap();
    Arc::new(roots)
}

fn key_der(key: &AgentKey) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.private_key_der()))
}

/// Serves one connection: requires a client certificate chaining to `ca`, then returns
/// the identity its certificate carries (or the handshake error).
async fn cell_once(
    listener: TcpListener,
    ca: Arc<ClusterCa>,
    now: jiff::Timestamp,
) -> Result<ClusterIdentity, String> {
    let (cert, key) = cell_cert(&ca, now);
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&ca), provider())
            .build()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(cert.der.clone())], key_der(&key))
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(config))
        .accept(tcp)
        .await
        .map_err(|e| e.to_string())?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no client certificate")?
        .to_vec();
    let identity = ca.check_peer(&peer, now).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
    tls.shutdown().await.ok();
    Ok(identity)
}

/// Dials the cell at `addr` as the holder of `cert` (trusting `ca` for the cell), and says
/// hello.
async fn agent_dial(
    addr: std::net::SocketAddr,
    ca: &ClusterCa,
    cert: &IssuedCert,
    key: &AgentKey,
) -> Result<(), String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_webpki_verifier(
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
                .build()
                .unwrap(),
        )
        .with_client_auth_cert(vec![CertificateDer::from(cert.der.clone())], key_der(key))
        .unwrap();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // The cell's certificate names the address agents dial, besides its identity.
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::test]
async fn an_agent_bootstraps_and_the_cell_reads_who_it_is() {
    let now = jiff::Timestamp::now();
    let ca = Arc::new(ClusterCa::generate(DOMAIN, now).unwrap());
    let mut tokens = TokenStore::default();
    let token = tokens
        .mint("edge", now, jiff::SignedDuration::from_hours(1))
        .unwrap();

    // The agent: its own key, a CSR, the token.
    let edge = ClusterIdentity::new(DOMAIN, "edge").unwrap();
    let key = AgentKey::generate().unwrap();
    let csr = key.csr_pem(&edge).unwrap();
    assert_eq!(
        tokens.redeem("edge", "guessed", now),
        Err(BootstrapError::Mismatch),
        "a wrong token gets nothing"
    );
    tokens.redeem("edge", token.secret(), now).unwrap();
    let cert = ca.sign_csr(&csr, &edge, now, DEFAULT_LIFETIME).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cell = tokio::spawn(cell_once(listener, ca.clone(), now));
    agent_dial(addr, &ca, &cert, &key).await.unwrap();
    let seen = cell.await.unwrap().unwrap();
    assert_eq!(seen, edge);
    // What the cell does with every message on this stream.
    assert!(seen.speaks_for("edge").is_ok());
    assert!(
        seen.speaks_for("prod").is_err(),
        "edge can never speak for prod"
    );
}

#[tokio::test]
async fn certificates_from_another_ca_or_past_their_life_are_refused() {
    let now = jiff::Timestamp::now();
    let ca = Arc::new(ClusterCa::generate(DOMAIN, now).unwrap());
    let edge = ClusterIdentity::new(DOMAIN, "edge").unwrap();
    let key = AgentKey::generate().unwrap();

    // Another hierarchy's CA, same trust domain name: the chain does not verify.
    let rogue = ClusterCa::generate(DOMAIN, now).unwrap();
    let forged = rogue
        .sign_csr(&key.csr_pem(&edge).unwrap(), &edge, now, DEFAULT_LIFETIME)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cell = tokio::spawn(cell_once(listener, ca.clone(), now));
    let _ = agent_dial(addr, &ca, &forged, &key).await;
    let refused = cell.await.unwrap();
    assert!(
        refused.is_err(),
        "a certificate from another CA: {refused:?}"
    );

    // Issued two days ago for a day: rustls refuses it at the handshake.
    let two_days_ago = now - jiff::SignedDuration::from_hours(48);
    let old_ca = Arc::new(ClusterCa::generate(DOMAIN, two_days_ago).unwrap());
    let expired = old_ca
        .sign_csr(
            &key.csr_pem(&edge).unwrap(),
            &edge,
            two_days_ago,
            DEFAULT_LIFETIME,
        )
        .unwrap();
    assert!(matches!(
        old_ca.check_peer(&expired.der, now),
        Err(CaError::Expired(_))
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cell = tokio::spawn(cell_once(listener, old_ca.clone(), now));
    let _ = agent_dial(addr, &old_ca, &expired, &key).await;
    let refused = cell.await.unwrap();
    assert!(refused.is_err(), "an expired certificate: {refused:?}");
}
