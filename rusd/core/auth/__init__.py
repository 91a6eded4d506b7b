"""Authentication and RBAC: users, roles, permissions, the auth revision (etcd's auth store).

Pure: password hashes come in already computed (the server hashes with bcrypt before
proposing), tokens are the server's business. State lives in the KV backend's meta
table so every change is in the same durable batch as the apply that made it.
"""
