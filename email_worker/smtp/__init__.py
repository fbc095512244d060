"""The SMTP relay side: the mailer that classifies the relay's replies, its connection pool and
the pipelined wire exchange. The only package that imports smtplib."""
