-- 0004: certificate renewals. A certificate issued to renew another names
-- it in renews; the renewed one is revoked once the new one is used, or
-- after a grace period (registry.Store.ListRenewedCertificates).

ALTER TABLE certificates ADD COLUMN renews TEXT NOT NULL DEFAULT '';
CREATE INDEX certificates_renewals ON certificates (issued_at) WHERE renews != '';
