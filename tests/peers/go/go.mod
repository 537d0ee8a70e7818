module readyfd.invalid/peer

go 1.19
