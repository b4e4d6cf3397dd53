-- 0004: certificate renewals, and expiry across organisations.
--
-- Certificate renewals. A certificate issued to renew another names
-- it in renews; the renewed one is revoked once the new one is used, or
-- after a grace period (registry.Store.ListRenewedCertificates).

ALTER TABLE certificates ADD COLUMN renews TEXT NOT NULL DEFAULT '';
CREATE INDEX certificates_renewals ON certificates (issued_at) WHERE renews != '';
-- Expiring certificates of every organisation, for the metrics.
CREATE INDEX certificates_active_expiry ON certificates (not_after) WHERE status = 'active';
