"""The MCP face: Cloudplane's use cases as MCP tools, over stdio (`cloudplane mcp`) and streamable HTTP (`/mcp`)."""
