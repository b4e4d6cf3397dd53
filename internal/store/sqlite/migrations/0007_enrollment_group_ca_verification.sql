-- 0007: proof of possession of enrollment groups' CA certificates
-- (registry.X509CAAttestation): an X.509 group admits devices only once its
-- CA is verified. Groups written before this migration start unverified.
--
-- x509_ca_verified is 0 or 1; x509_ca_verified_at is NULL unless verified;
-- x509_ca_verification_code is the pending code, '' when none.

ALTER TABLE enrollment_groups ADD COLUMN x509_ca_verified INTEGER NOT NULL DEFAULT 0 CHECK (x509_ca_verified IN (0, 1));
ALTER TABLE enrollment_groups ADD COLUMN x509_ca_verified_at INTEGER;
ALTER TABLE enrollment_groups ADD COLUMN x509_ca_verification_code TEXT NOT NULL DEFAULT '';
