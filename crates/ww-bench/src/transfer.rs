//! Signed SOL transfers, for generating benchmark traffic
//! (`walletwatch bench compare`) without the agave client crates.
//!
//! A legacy transaction with one System Program `Transfer` instruction:
//! header `[1, 0, 1]`, keys `[payer, recipient, system program]`, the recent
//! blockhash, instruction `{program 2, accounts [0, 1], data u32 2 ‖ u64
//! lamports}`, signed with the payer's Ed25519 key over the message bytes.
//! Keypair files are the `solana-keygen` JSON array of 64 bytes (secret ‖ public).

use std::path::Path;

use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::json;
use ww_core::{Commitment, Signature, WalletAddress};

use ww_solana::RpcClient;
use ww_solana::RpcError;

const SYSTEM_PROGRAM: [u8; 32] = [0; 32];

/// A payer's key pair.
#[derive(Debug)]
pub struct Payer {
    key: SigningKey,
    address: WalletAddress,
}

impl Payer {
    /// Reads a `solana-keygen` JSON key pair file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let bytes: Vec<u8> =
            serde_json::from_str(&text).map_err(|_| format!("{} is not a JSON array of 64 bytes", path.display()))?;
        let secret: [u8; 32] = bytes
            .get(..32)
            .and_then(|slice| slice.try_into().ok())
            .ok_or_else(|| format!("{} is not a key pair", path.display()))?;
        let key = SigningKey::from_bytes(&secret);
        if bytes.len() != 64 || bytes[32..] != key.verifying_key().to_bytes() {
            return Err(format!("{}: the public half does not match the secret", path.display()));
        }
        let address = WalletAddress::parse(&bs58::encode(key.verifying_key().to_bytes()).into_string())
            .map_err(|error| error.to_string())?;
        Ok(Self { key, address })
    }

    /// The payer's address.
    pub fn address(&self) -> &WalletAddress {
        &self.address
    }
}

fn compact_u16(value: usize, out: &mut Vec<u8>) {
    let mut rest = value;
    loop {
        let mut byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest != 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if rest == 0 {
            break;
        }
    }
}

fn decode_32(address: &str) -> Result<[u8; 32], String> {
    bs58::decode(address)
        .into_vec()
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| format!("{address} is not a 32-byte base58 value"))
}

/// Builds and signs a transfer; returns the wire bytes and the signature.
pub fn build_transfer(
    payer: &Payer,
    to: &WalletAddress,
    lamports: u64,
    blockhash: &str,
) -> Result<(Vec<u8>, Signature), String> {
    let mut message = vec![1u8, 0, 1];
    compact_u16(3, &mut message);
    message.extend_from_slice(&payer.key.verifying_key().to_bytes());
    message.extend_from_slice(&decode_32(to.as_str())?);
    message.extend_from_slice(&SYSTEM_PROGRAM);
    message.extend_from_slice(&decode_32(blockhash)?);
    compact_u16(1, &mut message);
    message.push(2);
    compact_u16(2, &mut message);
    message.extend_from_slice(&[0, 1]);
    let mut data = 2u32.to_le_bytes().to_vec();
    data.extend_from_slice(&lamports.to_le_bytes());
    compact_u16(data.len(), &mut message);
    message.extend_from_slice(&data);
    let signature = payer.key.sign(&message).to_bytes();
    let mut wire = Vec::with_capacity(1 + 64 + message.len());
    compact_u16(1, &mut wire);
    wire.extend_from_slice(&signature);
    wire.extend_from_slice(&message);
    let signature = Signature::parse(&bs58::encode(signature).into_string()).map_err(|error| error.to_string())?;
    Ok((wire, signature))
}

/// Sends a transfer and returns its signature once the node accepted it.
pub async fn send_transfer(
    client: &RpcClient,
    payer: &Payer,
    to: &WalletAddress,
    lamports: u64,
    commitment: Commitment,
) -> Result<Signature, RpcError> {
    let latest: serde_json::Value =
        client.call("getLatestBlockhash", json!([{"commitment": commitment.as_str()}])).await?;
    let blockhash = latest["value"]["blockhash"].as_str().unwrap_or_default().to_string();
    let (wire, signature) = build_transfer(payer, to, lamports, &blockhash)
        .map_err(|reason| RpcError::Malformed { method: "getLatestBlockhash", reason })?;
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(wire);
    let _: String = client
        .call("sendTransaction", json!([encoded, {"encoding": "base64", "preflightCommitment": commitment.as_str()}]))
        .await?;
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_u16_matches_the_wire_format() {
        let encode = |value| {
            let mut out = Vec::new();
            compact_u16(value, &mut out);
            out
        };
        assert_eq!(encode(0), vec![0]);
        assert_eq!(encode(127), vec![0x7f]);
        assert_eq!(encode(128), vec![0x80, 0x01]);
        assert_eq!(encode(16_384), vec![0x80, 0x80, 0x01]);
    }

    #[test]
    fn a_transfer_has_the_documented_layout_and_a_valid_signature() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::from_bytes(&[5u8; 32]);
        let mut bytes = key.to_bytes().to_vec();
        bytes.extend_from_slice(&key.verifying_key().to_bytes());
        let path = dir.path().join("payer.json");
        std::fs::write(&path, serde_json::to_string(&bytes).expect("json")).expect("write");
        let payer = Payer::read(&path).expect("payer");
        let to = WalletAddress::parse("11111111111111111111111111111112").expect("valid");
        let blockhash = bs58::encode([9u8; 32]).into_string();
        let (wire, _) = build_transfer(&payer, &to, 1_000, &blockhash).expect("build");
        // 1 signature, 64 bytes, header, 3 keys, blockhash, 1 instruction of 12 data bytes.
        assert_eq!(wire.len(), 1 + 64 + 3 + 1 + 96 + 32 + 1 + 1 + 1 + 2 + 1 + 12);
        let message = &wire[65..];
        let signature = ed25519_dalek::Signature::from_slice(&wire[1..65]).expect("signature");
        use ed25519_dalek::Verifier as _;
        key.verifying_key().verify(message, &signature).expect("verifies");
        assert_eq!(&message[message.len() - 12..message.len() - 8], &2u32.to_le_bytes());
        std::fs::write(&path, "[1,2,3]").expect("write");
        assert!(Payer::read(&path).is_err());
    }
}
