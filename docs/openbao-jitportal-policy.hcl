# The policy of jitportal's admin token on an OpenBao or Vault server (kind: openbao).
# Written for the default prefix "jit_"; with another prefix, change "jit_" below.
#   bao policy write jitportal docs/openbao-jitportal-policy.hcl
#   bao token create -orphan -period=24h -policy=jitportal    # the target check renews it

# One token role per grant, named <prefix>g<grant id>, and the tokens made through it.
path "auth/token/roles"          { capabilities = ["list"] }
path "auth/token/roles/*"        { capabilities = ["read"] }   # to find other roles that issue orphan tokens
path "auth/token/roles/jit_*"    { capabilities = ["create", "read", "update", "delete"] }
path "auth/token/create/jit_*"   { capabilities = ["create", "update"] }

# Every token of a grant sits under its role's lease prefix: list it (verification,
# reconciler) and revoke it (revocation; children go with their parent).
path "sys/leases/lookup/auth/token/create/*"           { capabilities = ["list", "sudo"] }
path "sys/leases/revoke-prefix/auth/token/create/jit_*" { capabilities = ["update", "sudo"] }

# What a scope's token may do, asked of the server itself; the policies it names; the auth methods.
path "sys/capabilities-accessor" { capabilities = ["update"] }
path "sys/policies/acl/*"        { capabilities = ["read"] }
path "sys/auth"                  { capabilities = ["read"] }
