-- Finding a lead by its email or phone (the operator UI's search box) reads
-- the source's accepted snapshot, where the source step stored the normalised
-- values: partial indexes keep that an index lookup on a flow with millions of
-- events, and cost nothing for the other event types.
CREATE INDEX events_accepted_email ON events ((snapshot #>> '{vars,lead.email}'))
    WHERE type = 'source.accepted';
CREATE INDEX events_accepted_phones ON events USING gin ((ARRAY[
    snapshot #>> '{vars,lead.phone_1}',
    snapshot #>> '{vars,lead.phone_2}',
    snapshot #>> '{vars,lead.phone_3}',
    snapshot #>> '{vars,lead.phone}'
])) WHERE type = 'source.accepted';
