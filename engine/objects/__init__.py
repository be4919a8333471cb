"""Object stores (S3, Azure Blob): create-only writes, listing, reading; one contract."""
