"""calsync: two-way sync between Directus bookings and Google Calendar."""
