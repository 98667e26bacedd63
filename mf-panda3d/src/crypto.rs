//! Subfile encryption as Panda3D's EncryptStreamBuf does it (OpenSSL EVP): a small record naming the
//! cipher, key length and iteration count, an IV, then CBC ciphertext with PKCS#7 padding of
//! `"crypty" + data`. The key is PBKDF2-HMAC-SHA1(password, salt = IV, count * 1000 + 1 iterations).

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, KeyInit, KeyIvInit};

use crate::format::{EncryptionHeader, ENCRYPTION_CHECK, ENCRYPTION_HEADER_LEN};

/// A cipher Panda3D can be configured with (PRC `encryption-algorithm`), by OpenSSL NID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// NID 91, multify's default, with a variable key length (16 bytes by default).
    BlowfishCbc,
    /// NID 419.
    Aes128Cbc,
    /// NID 423.
    Aes192Cbc,
    /// NID 427.
    Aes256Cbc,
    /// NID 31.
    DesCbc,
    /// NID 44 (triple DES).
    DesEde3Cbc,
}

impl Cipher {
    /// The cipher with OpenSSL NID `nid`, if supported.
    pub fn from_nid(nid: u16) -> Option<Cipher> {
        Some(match nid {
            91 => Cipher::BlowfishCbc,
            419 => Cipher::Aes128Cbc,
            423 => Cipher::Aes192Cbc,
            427 => Cipher::Aes256Cbc,
            31 => Cipher::DesCbc,
            44 => Cipher::DesEde3Cbc,
            _ => return None,
        })
    }

    /// The cipher's OpenSSL NID, as recorded in the encryption record.
    pub fn nid(self) -> u16 {
        match self {
            Cipher::BlowfishCbc => 91,
            Cipher::Aes128Cbc => 419,
            Cipher::Aes192Cbc => 423,
            Cipher::Aes256Cbc => 427,
            Cipher::DesCbc => 31,
            Cipher::DesEde3Cbc => 44,
        }
    }

    /// OpenSSL's name for the cipher.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::BlowfishCbc => "bf-cbc",
            Cipher::Aes128Cbc => "aes-128-cbc",
            Cipher::Aes192Cbc => "aes-192-cbc",
            Cipher::Aes256Cbc => "aes-256-cbc",
            Cipher::DesCbc => "des-cbc",
            Cipher::DesEde3Cbc => "des-ede3-cbc",
        }
    }

    fn iv_len(self) -> usize {
        match self {
            Cipher::BlowfishCbc | Cipher::DesCbc | Cipher::DesEde3Cbc => 8,
            _ => 16,
        }
    }

    /// Whether a key of `len` bytes is valid (Blowfish takes 4 to 56 bytes; the others are fixed).
    fn key_len_ok(self, len: usize) -> bool {
        match self {
            Cipher::BlowfishCbc => (4..=56).contains(&len),
            Cipher::Aes128Cbc => len == 16,
            Cipher::Aes192Cbc => len == 24,
            Cipher::Aes256Cbc => len == 32,
            Cipher::DesCbc => len == 8,
            Cipher::DesEde3Cbc => len == 24,
        }
    }
}

/// Largest iteration count accepted (PBKDF2 runs `count * 1000 + 1` rounds): Panda3D's own default
/// is 100 and multify's 0. The field allows 65535, i.e. 65 million rounds, seconds of CPU per subfile
/// read, which a forged archive could repeat for every subfile (found by the `panda3d` fuzz target).
pub const MAX_ITERATION_COUNT: u16 = 100;

fn derive_key(password: &str, iv: &[u8], iteration_count: u16, key_len: usize) -> Vec<u8> {
    let mut key = vec![0u8; key_len];
    let rounds = u32::from(iteration_count) * 1000 + 1;
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password.as_bytes(), iv, rounds, &mut key);
    key
}

fn cbc_decrypt<C>(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<usize, String>
where
    C: BlockCipherDecrypt + KeyInit,
{
    let decryptor = cbc::Decryptor::<C>::new_from_slices(key, iv).map_err(|_| "bad key or IV length".to_owned())?;
    decryptor
        .decrypt_padded::<Pkcs7>(buf)
        .map(|plain| plain.len())
        .map_err(|_| "wrong password (the padding does not check out)".to_owned())
}

fn cbc_encrypt<C>(key: &[u8], iv: &[u8], plain: &[u8]) -> Result<Vec<u8>, String>
where
    C: BlockCipherEncrypt + KeyInit,
{
    let encryptor = cbc::Encryptor::<C>::new_from_slices(key, iv).map_err(|_| "bad key or IV length".to_owned())?;
    let block = 16;
    let mut buf = vec![0u8; plain.len() + block];
    buf[..plain.len()].copy_from_slice(plain);
    let len = encryptor.encrypt_padded::<Pkcs7>(&mut buf, plain.len()).map_err(|_| "padding failed".to_owned())?.len();
    buf.truncate(len);
    Ok(buf)
}

/// Decrypts a stored encrypted subfile; returns the plaintext without the "crypty" check bytes. Errors
/// are human-readable reasons (the caller adds file and entry).
pub fn decrypt(stored: &[u8], password: &str) -> Result<Vec<u8>, String> {
    let header: EncryptionHeader =
        mf_format::format::from_bytes(stored.get(..ENCRYPTION_HEADER_LEN).unwrap_or_default())
            .ok_or("the encryption record is cut off")?;
    let cipher = Cipher::from_nid(header.cipher_nid)
        .ok_or_else(|| format!("cipher NID {} is not supported by this build", header.cipher_nid))?;
    let key_len = usize::from(header.key_length);
    if !cipher.key_len_ok(key_len) {
        return Err(format!("key length {key_len} is invalid for {}", cipher.name()));
    }
    if header.iteration_count > MAX_ITERATION_COUNT {
        return Err(format!(
            "iteration count {} (x1000 PBKDF2 rounds) exceeds the limit of {MAX_ITERATION_COUNT}",
            header.iteration_count
        ));
    }
    let iv_end = ENCRYPTION_HEADER_LEN + cipher.iv_len();
    let iv = stored.get(ENCRYPTION_HEADER_LEN..iv_end).ok_or("the IV is cut off")?;
    let mut buf = stored[iv_end..].to_vec();
    let key = derive_key(password, iv, header.iteration_count, key_len);
    let len = match cipher {
        Cipher::BlowfishCbc => cbc_decrypt::<blowfish::Blowfish>(&key, iv, &mut buf),
        Cipher::Aes128Cbc => cbc_decrypt::<aes::Aes128>(&key, iv, &mut buf),
        Cipher::Aes192Cbc => cbc_decrypt::<aes::Aes192>(&key, iv, &mut buf),
        Cipher::Aes256Cbc => cbc_decrypt::<aes::Aes256>(&key, iv, &mut buf),
        Cipher::DesCbc => cbc_decrypt::<des::Des>(&key, iv, &mut buf),
        Cipher::DesEde3Cbc => cbc_decrypt::<des::TdesEde3>(&key, iv, &mut buf),
    }?;
    buf.truncate(len);
    if !buf.starts_with(ENCRYPTION_CHECK) {
        return Err("wrong password (the decrypted check bytes are not \"crypty\")".into());
    }
    buf.drain(..ENCRYPTION_CHECK.len());
    Ok(buf)
}

/// Encrypts `data` as Panda3D would with `cipher`, the given key length and IV (count 0: one
/// PBKDF2 iteration, multify's default). Used by tests and by writers that want encryption.
pub fn encrypt(data: &[u8], password: &str, cipher: Cipher, key_len: u16, iv: &[u8]) -> Result<Vec<u8>, String> {
    if !cipher.key_len_ok(usize::from(key_len)) || iv.len() != cipher.iv_len() {
        return Err("bad key or IV length".into());
    }
    let header = EncryptionHeader { cipher_nid: cipher.nid(), key_length: key_len, iteration_count: 0 };
    let key = derive_key(password, iv, 0, usize::from(key_len));
    let mut plain = ENCRYPTION_CHECK.to_vec();
    plain.extend_from_slice(data);
    let body = match cipher {
        Cipher::BlowfishCbc => cbc_encrypt::<blowfish::Blowfish>(&key, iv, &plain),
        Cipher::Aes128Cbc => cbc_encrypt::<aes::Aes128>(&key, iv, &plain),
        Cipher::Aes192Cbc => cbc_encrypt::<aes::Aes192>(&key, iv, &plain),
        Cipher::Aes256Cbc => cbc_encrypt::<aes::Aes256>(&key, iv, &plain),
        Cipher::DesCbc => cbc_encrypt::<des::Des>(&key, iv, &plain),
        Cipher::DesEde3Cbc => cbc_encrypt::<des::TdesEde3>(&key, iv, &plain),
    }?;
    let mut out = mf_format::format::to_bytes(&header);
    out.extend_from_slice(iv);
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz/corpus/panda3d/regress-pbkdf2-iterations.mf): a forged iteration count made
    /// every read of the subfile run 65 million PBKDF2 rounds.
    #[test]
    fn an_iteration_count_above_the_limit_is_refused_before_deriving_a_key() {
        let iv = [7u8; 8];
        let mut stored = encrypt(b"data", "secret", Cipher::BlowfishCbc, 16, &iv).unwrap();
        stored[4..6].copy_from_slice(&u16::MAX.to_le_bytes());
        let started = std::time::Instant::now();
        let error = decrypt(&stored, "secret").unwrap_err();
        assert!(error.contains("iteration count 65535"), "{error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "refused without deriving the key");
        stored[4..6].copy_from_slice(&MAX_ITERATION_COUNT.to_le_bytes());
        assert!(decrypt(&stored, "secret").unwrap_err().contains("wrong password"), "the limit itself is accepted");
    }

    #[test]
    fn every_cipher_round_trips_and_rejects_a_wrong_password() {
        for (cipher, key_len, iv_len) in [
            (Cipher::BlowfishCbc, 16, 8),
            (Cipher::Aes128Cbc, 16, 16),
            (Cipher::Aes192Cbc, 24, 16),
            (Cipher::Aes256Cbc, 32, 16),
            (Cipher::DesCbc, 8, 8),
            (Cipher::DesEde3Cbc, 24, 8),
        ] {
            let iv: Vec<u8> = (0..iv_len as u8).collect();
            let stored = encrypt(b"BINARYDATA\x00\x01\x02", "secret", cipher, key_len, &iv).unwrap();
            assert_eq!(u16::from_le_bytes([stored[0], stored[1]]), cipher.nid());
            assert_eq!(decrypt(&stored, "secret").unwrap(), b"BINARYDATA\x00\x01\x02", "{cipher:?}");
            let err = decrypt(&stored, "wrong").unwrap_err();
            assert!(err.contains("wrong password"), "{cipher:?}: {err}");
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        assert!(decrypt(b"", "x").is_err());
        assert!(decrypt(&[91, 0, 16, 0, 0, 0, 1, 2], "x").unwrap_err().contains("IV"));
        assert!(decrypt(&[91, 0, 99, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8], "x").unwrap_err().contains("key length"));
        assert!(decrypt(&[7, 0, 16, 0, 0, 0], "x").unwrap_err().contains("NID 7"));
        // Ciphertext not a whole number of blocks.
        assert!(decrypt(&[91, 0, 16, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "x").is_err());
    }
}
