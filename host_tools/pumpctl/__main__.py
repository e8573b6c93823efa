from pumpctl.cli import main

raise SystemExit(main())
