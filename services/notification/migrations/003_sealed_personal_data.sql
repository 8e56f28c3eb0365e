-- SPEC §9: a customer's personal values are kept sealed under their data key (AES-256-GCM tokens,
-- eventkit.crypto.encrypt_text), so destroying the key (erasure) makes every copy here unreadable.

-- notification_contacts.value is now a token with AAD "<owner>|notification_contacts.value"; owner
-- is the customer whose data key sealed it (the key intake sealed the identifier with: after a
-- merge, a survivor's contacts may be under the merged id's key). lookup is an HMAC of
-- "<kind>|<value>" under a key derived from that data key, so an address is kept once per
-- customer without being stored readable. Rows from before have owner and lookup NULL and a
-- plaintext value: the delivery loop seals them (handlers.seal_legacy).
ALTER TABLE notification_contacts DROP CONSTRAINT notification_contacts_pkey;
ALTER TABLE notification_contacts ADD COLUMN owner text, ADD COLUMN lookup text;
CREATE UNIQUE INDEX notification_contacts_lookup ON notification_contacts (customer_id, kind, lookup);
CREATE INDEX notification_contacts_owner ON notification_contacts (owner);
CREATE INDEX notification_contacts_legacy ON notification_contacts (added_at) WHERE owner IS NULL;

-- Customer messages: address, subject and body are tokens under the data key of sealed_by (AAD
-- "<sealed_by>|notifications.<column>"). Staff messages hold no personal data of a customer and
-- stay plain (sealed_by NULL). After an erasure the address is NULL and subject/body "[erased]".
-- Customer rows from before with readable values have sealed_by NULL: the delivery loop seals them.
ALTER TABLE notifications ADD COLUMN sealed_by text;
CREATE INDEX notifications_sealed_by ON notifications (sealed_by) WHERE sealed_by IS NOT NULL;
CREATE INDEX notifications_legacy ON notifications (created_at)
    WHERE audience = 'customer' AND sealed_by IS NULL
    AND (address IS NOT NULL OR subject IS NOT NULL OR body IS NOT NULL);
