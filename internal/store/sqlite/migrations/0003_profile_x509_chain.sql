-- 0003: X.509 certificate chain provisioning of a profile
-- (registry.X509ChainProvisioning): the CA certificates it trusts, the
-- pattern that takes the device name from a certificate's common name, and
-- whether it creates devices. NULL CA certificates: the profile has none.

ALTER TABLE profiles ADD COLUMN x509_chain_ca_pem TEXT;
ALTER TABLE profiles ADD COLUMN x509_chain_cn_pattern TEXT NOT NULL DEFAULT '';
ALTER TABLE profiles ADD COLUMN x509_chain_allow_create INTEGER NOT NULL DEFAULT 0
    CHECK (x509_chain_allow_create IN (0, 1));
-- TLS handshakes and first connections list the profiles that trust CAs.
CREATE INDEX profiles_x509_chain ON profiles (org_id, name) WHERE x509_chain_ca_pem IS NOT NULL;
